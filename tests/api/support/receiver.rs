//! A webhook receiver on loopback: a real HTTP server that records every request and answers
//! with scripted status codes (then 200), as a customer's endpoint would.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, http::StatusCode, routing::post};
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    /// Verifies the Standard Webhooks signature with the `standardwebhooks` crate: its own HMAC
    /// and base64, not the code that signed.
    pub fn verify(&self, secret: &str) {
        let mut headers = reqwest::header::HeaderMap::new();
        for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
            headers.insert(name, self.header(name).parse().expect("header present"));
        }
        let verifier = standardwebhooks::Webhook::new(secret).expect("a whsec_ secret");
        verifier.verify(&self.body, &headers).expect("the signature verifies independently");
    }
}

struct Shared {
    script: Mutex<VecDeque<u16>>,
    received: watch::Sender<Vec<Received>>,
}

pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Receiver {
    /// Listens on a random loopback port; answers `script` in order, then 200 forever.
    pub async fn start(script: &[u16]) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), script).await
    }

    pub async fn start_on(addr: SocketAddr, script: &[u16]) -> Self {
        let shared = Arc::new(Shared {
            script: Mutex::new(script.iter().copied().collect()),
            received: watch::Sender::new(Vec::new()),
        });
        let router = Router::new().route("/hook", post(receive)).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(addr).await.expect("receiver binds");
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { addr, shared }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.borrow().clone()
    }

    /// Waits until `n` requests arrived (30 s at most) and returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let mut seen = self.shared.received.subscribe();
        let arrived = tokio::time::timeout(Duration::from_secs(30), seen.wait_for(|all| all.len() >= n)).await;
        match arrived {
            Ok(Ok(all)) => all.clone(),
            _ => panic!("{n} deliveries never arrived; got {}", self.received().len()),
        }
    }
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> (StatusCode, &'static str) {
    shared.received.send_modify(|all| all.push(Received { headers, body }));
    let code = shared.script.lock().unwrap().pop_front().unwrap_or(200);
    let code = StatusCode::from_u16(code).unwrap();
    (code, if code.is_success() { "thanks" } else { "receiver says no" })
}

/// A loopback address nothing listens on (yet): connections to it are refused.
pub async fn free_addr() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}
