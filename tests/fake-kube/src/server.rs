//! Owns the network side: the shared state every request sees, the API listener's accept loop
//! (closed and re-opened for [`Fault::Refuse`]), HTTP/1.1 connections with upgrades, and the
//! request gate that counts API requests and applies the other faults before routing.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tower::ServiceExt;

use crate::Fault;
use crate::api;
use crate::pods::PodStore;

/// What the accept loop is told to do with its listener.
enum ListenerCommand {
    /// Drop the listener, so the kernel refuses new connections; acknowledged once dropped.
    Close(oneshot::Sender<()>),
    /// Serve this freshly bound listener.
    Serve(TcpListener),
}

/// State shared by the handle, the accept loop, every connection and every exec session.
pub(crate) struct Shared {
    pub(crate) pods: PodStore,
    pub(crate) addr: SocketAddr,
    fault: watch::Sender<Fault>,
    requests: AtomicU64,
    shutdown: watch::Sender<bool>,
    active_execs: watch::Sender<usize>,
    listener: mpsc::UnboundedSender<ListenerCommand>,
    /// Serialises fault changes, so closing and re-binding the listener never interleave.
    fault_change: Mutex<()>,
    /// Exec speaks only `v4.channel.k8s.io` (an API server older than 1.30), so a client
    /// cannot half-close stdin.
    v4_only: std::sync::atomic::AtomicBool,
    /// Bumped to cut every open watch.
    watch_generation: watch::Sender<u64>,
}

impl Shared {
    pub(crate) fn fault(&self) -> Fault {
        *self.fault.borrow()
    }

    /// Cuts every open watch (as a restart of the API server would).
    pub(crate) fn end_watches(&self) {
        self.watch_generation.send_modify(|generation| *generation += 1);
    }

    pub(crate) fn watch_generation(&self) -> watch::Receiver<u64> {
        self.watch_generation.subscribe()
    }

    /// Every fault switch, for the watches that must end when the "server" goes away.
    pub(crate) fn faults(&self) -> watch::Receiver<Fault> {
        self.fault.subscribe()
    }

    pub(crate) fn v4_only(&self) -> bool {
        self.v4_only.load(Ordering::SeqCst)
    }

    pub(crate) fn set_v4_only(&self, only: bool) {
        self.v4_only.store(only, Ordering::SeqCst);
    }

    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub(crate) fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }

    pub(crate) fn active_execs(&self) -> watch::Receiver<usize> {
        self.active_execs.subscribe()
    }

    /// Counts an exec session until the returned guard drops (also when its task is aborted).
    pub(crate) fn exec_started(self: &Arc<Self>) -> ExecCount {
        self.active_execs.send_modify(|n| *n += 1);
        ExecCount(Arc::clone(self))
    }

    /// Switches the fault. Entering `Refuse` returns once the listener is closed; leaving it
    /// returns once the same address is listening again, so callers can act on it at once.
    pub(crate) async fn set_fault(&self, fault: Fault) -> io::Result<()> {
        let _serialised = self.fault_change.lock().await;
        let previous = self.fault();
        if previous == fault {
            return Ok(());
        }
        if fault == Fault::Refuse {
            // Set first: a connection accepted before the listener closes is then dropped.
            self.fault.send_replace(fault);
            let (done, closed) = oneshot::channel();
            if self.listener.send(ListenerCommand::Close(done)).is_ok() {
                let _ = closed.await;
            }
            return Ok(());
        }
        if previous == Fault::Refuse {
            let listener = bind(self.addr)?;
            self.listener
                .send(ListenerCommand::Serve(listener))
                .map_err(|_| io::Error::other("fake-kube has shut down"))?;
        }
        self.fault.send_replace(fault);
        Ok(())
    }
}

/// Resolves once the server is shutting down. (A plain `()`: the `watch::Ref` that `wait_for`
/// yields is not `Send`, so it must not live inside a spawned task's `select!`.)
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Decrements the active exec count when dropped.
pub(crate) struct ExecCount(Arc<Shared>);

impl Drop for ExecCount {
    fn drop(&mut self) {
        self.0.active_execs.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Binds a listener with `SO_REUSEADDR`, so the port can be taken back right after `Refuse`
/// even while closed connections linger in `TIME_WAIT`.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Binds the API listener, creates the shared state and starts serving in the background.
pub(crate) async fn start(addr: SocketAddr) -> io::Result<Arc<Shared>> {
    let listener = bind(addr)?;
    let addr = listener.local_addr()?;
    let (commands, command_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        pods: PodStore::new()?,
        addr,
        fault: watch::Sender::new(Fault::None),
        requests: AtomicU64::new(0),
        shutdown: watch::Sender::new(false),
        active_execs: watch::Sender::new(0),
        listener: commands,
        fault_change: Mutex::new(()),
        v4_only: std::sync::atomic::AtomicBool::new(false),
        watch_generation: watch::Sender::new(0),
    });
    let router = api::router(Arc::clone(&shared));
    tokio::spawn(accept_loop(listener, command_rx, Arc::clone(&shared), router));
    Ok(shared)
}

/// Serves `router` (the control API) on its own listener, never subject to faults.
pub(crate) fn serve_plain(listener: TcpListener, router: Router, shared: &Shared) {
    let mut shutdown = shared.shutdown_signal();
    tokio::spawn(async move {
        let serve = axum::serve(listener, router).with_graceful_shutdown(async move { stopped(&mut shutdown).await });
        let _ = serve.await;
    });
}

async fn accept_loop(
    listener: TcpListener,
    mut commands: mpsc::UnboundedReceiver<ListenerCommand>,
    shared: Arc<Shared>,
    router: Router,
) {
    let mut listener = Some(listener);
    let mut shutdown = shared.shutdown_signal();
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(ListenerCommand::Close(done)) => {
                    listener = None;
                    let _ = done.send(());
                }
                Some(ListenerCommand::Serve(fresh)) => listener = Some(fresh),
                None => return,
            },
            accepted = accept(listener.as_ref()) => match accepted {
                Ok((stream, _)) if shared.fault() == Fault::Refuse => drop(stream),
                Ok((stream, _)) => {
                    tokio::spawn(serve_connection(stream, Arc::clone(&shared), router.clone()));
                }
                // Per-connection failures (e.g. the peer already reset) must not stop the server.
                Err(error) => eprintln!("fake-kube: accept failed: {error}"),
            },
            _ = stopped(&mut shutdown) => return,
        }
    }
}

async fn accept(listener: Option<&TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// The error a request fails with under `Refuse`: hyper then drops the connection unanswered,
/// which is how a pooled keep-alive connection to a dead server looks to the client.
#[derive(Debug)]
struct Refused;

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fake-kube refuses requests (Fault::Refuse)")
    }
}

impl std::error::Error for Refused {}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>, router: Router) {
    let mut shutdown = shared.shutdown_signal();
    let service = hyper::service::service_fn(move |request| gate(Arc::clone(&shared), router.clone(), request));
    let connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).with_upgrades();
    tokio::select! {
        _ = connection => {}
        _ = stopped(&mut shutdown) => {}
    }
}

/// Counts and fault-gates every Kubernetes API request; `/_fake/` control requests pass as is.
async fn gate(
    shared: Arc<Shared>,
    router: Router,
    request: hyper::Request<Incoming>,
) -> Result<axum::response::Response, Refused> {
    if !request.uri().path().starts_with("/_fake/") {
        shared.requests.fetch_add(1, Ordering::SeqCst);
        let mut faults = shared.fault.subscribe();
        // `Hang` holds the request until the fault changes (or the server shuts down, which
        // drops the connection); what the fault became then decides the answer.
        let fault = match faults.wait_for(|fault| *fault != Fault::Hang).await {
            Ok(fault) => *fault,
            Err(_) => return Err(Refused),
        };
        match fault {
            Fault::Refuse => return Err(Refused),
            Fault::Http500 => return Ok(api::internal_error()),
            Fault::None | Fault::Hang | Fault::DropMidStream | Fault::CloseMidStream => {}
        }
    }
    let request = request.map(Body::new);
    match router.oneshot(request).await {
        Ok(response) => Ok(response),
        Err(infallible) => match infallible {},
    }
}
