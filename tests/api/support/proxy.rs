//! A TCP proxy in front of Postgres that a test can cut: every open connection is closed and new
//! ones are refused (accepted and closed at once) until it is restored. A database outage,
//! without stopping the Postgres server the other tests share.

use std::net::SocketAddr;

use tokio::{
    io::copy_bidirectional,
    net::{TcpListener, TcpStream},
    sync::watch,
};

pub struct TcpProxy {
    pub addr: SocketAddr,
    cut: watch::Sender<bool>,
}

impl TcpProxy {
    /// Forwards connections on a fresh loopback port to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy port");
        let addr = listener.local_addr().expect("proxy address");
        let cut = watch::Sender::new(false);
        let cuts = cut.subscribe();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *cuts.borrow() {
                    drop(client);
                    continue;
                }
                tokio::spawn(forward(client, target, cuts.clone()));
            }
        });
        Self { addr, cut }
    }

    /// A Postgres URL like `url` that connects through this proxy.
    pub fn postgres_url(&self, url: &str) -> String {
        let (scheme_and_user, rest) = url.split_once('@').expect("a URL with user@host");
        let (_, path) = rest.split_once('/').expect("a URL with a database");
        format!("{scheme_and_user}@{}/{path}", self.addr)
    }

    /// Closes every open connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

async fn forward(mut client: TcpStream, target: SocketAddr, mut cuts: watch::Receiver<bool>) {
    let Ok(mut server) = TcpStream::connect(target).await else { return };
    tokio::select! {
        _ = copy_bidirectional(&mut client, &mut server) => {}
        _ = cuts.wait_for(|cut| *cut) => {}
    }
}
