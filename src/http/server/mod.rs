//! The accept loop: hyper's HTTP/1 and HTTP/2 on every TCP connection, with the limits a
//! server open to any client needs and `axum::serve` does not set.
//!
//! - A cap on the connections of one client address (`per_ip`), so one client's sockets leave
//!   the rest to everyone else.
//! - A cap on open connections (`RDEV_MAX_CONNECTIONS`), below the process's file limit, so a
//!   flood of idle sockets can never starve the server of descriptors. At the cap a new
//!   connection takes the place of the one idle longest (no request in flight: a silent socket,
//!   half a preface, a keep-alive between requests), so idle sockets, from however many
//!   addresses, cannot keep anyone out. When every connection is busy, a few more are still
//!   served, but only for `/health` and `/ready` (so probes keep answering); every other request
//!   on them gets 503 `UNAVAILABLE` with `Retry-After`. Past those, a connection is closed as
//!   soon as it is accepted.
//! - A deadline for a request's headers (`RDEV_HEADER_TIMEOUT`), which also closes a connection
//!   of either protocol that stays idle that long, and for each gap in a request body
//!   (`deadlines`).
//! - A request line longer than `MAX_REQUEST_LINE` gets 414 in the API's JSON, with an
//!   `X-Request-Id`, instead of hyper's bare answer (see `first_line`).

mod deadlines;
mod first_line;
mod per_ip;

pub use deadlines::is_stalled_body;

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::{ConnectInfo, Request},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt as _;

use self::deadlines::{Activity, Tracked};

use crate::telemetry::metrics::{HTTP_CONNECTIONS_OPEN, HTTP_CONNECTIONS_REFUSED_TOTAL};

/// Idle connections closed at once when the cap is reached.
const EVICTED_AT_ONCE: usize = 64;
/// How long a new connection at the cap waits for the place of the idle one it evicted.
const EVICTION_WAIT: Duration = Duration::from_millis(250);
/// How long a connection found idle may take to close politely (HTTP/2's GOAWAY) before it is
/// dropped.
const CLOSING_GRACE: Duration = Duration::from_secs(1);
/// Connections past the cap that are still served for probes, one request each.
const PROBE_CONNECTIONS: usize = 32;
/// Longest request line (method, target, version) the server reads; longer gets 414.
pub const MAX_REQUEST_LINE: usize = 16 * 1024;

/// Descriptors kept free of connections: the database pool, commands' pipes, the sandbox
/// helper, log files.
const RESERVED_DESCRIPTORS: u64 = 512;

/// The limits of `serve`.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    /// Connections one client address may hold (`RDEV_MAX_CONNECTIONS_PER_IP`).
    pub per_ip: usize,
    /// Addresses not capped per address: trusted proxies.
    pub proxies: Vec<ipnet::IpNet>,
}

impl Limits {
    /// `max_connections`, lowered to what the process's open-file limit leaves room for (after
    /// raising its soft limit to the hard one, as servers do), with a warning when lowered.
    pub fn fitted(max_connections: usize, header_timeout: Duration, per_ip: usize, proxies: Vec<ipnet::IpNet>) -> Self {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let available = match getrlimit(Resource::RLIMIT_NOFILE) {
            Ok((soft, hard)) => {
                if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                    hard
                } else {
                    soft
                }
            }
            Err(_) => u64::MAX,
        };
        let room = available.saturating_sub(RESERVED_DESCRIPTORS + PROBE_CONNECTIONS as u64).max(16);
        let cap = max_connections.min(usize::try_from(room).unwrap_or(usize::MAX));
        if cap < max_connections {
            tracing::warn!(
                max_connections,
                cap,
                open_files = available,
                "RDEV_MAX_CONNECTIONS lowered to fit the open-file limit"
            );
        }
        Self { max_connections: cap, header_timeout, per_ip, proxies }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting and waits for
/// the open connections to finish their requests and close.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let served = Arc::new(Semaphore::new(limits.max_connections));
    let per_ip = per_ip::PerIp::new(limits.per_ip, limits.proxies.clone());
    let header_timeout = limits.header_timeout;
    let probes_only = Arc::new(Semaphore::new(PROBE_CONNECTIONS));
    let builders = Arc::new(Builders::new(limits.header_timeout));
    let stopping = CancellationToken::new();
    let connections = TaskTracker::new();
    let open = Arc::new(OpenConnections::default());
    let mut accept_errors = AcceptErrors::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_errors.log(&error);
                    // Out of descriptors or memory: give the server a moment to free some.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(slot) = per_ip.admit(peer.ip()) else {
            metrics::counter!(HTTP_CONNECTIONS_REFUSED_TOTAL).increment(1);
            drop(stream);
            continue;
        };
        let evicted = || open.evict_idlest();
        let permit = match served.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) if evicted() => {
                tokio::time::timeout(EVICTION_WAIT, served.clone().acquire_owned()).await.ok().and_then(Result::ok)
            }
            Err(_) => None,
        };
        let (permit, probes) = match permit {
            Some(permit) => (permit, false),
            None => match probes_only.clone().try_acquire_owned() {
                Ok(permit) => (permit, true),
                Err(_) => {
                    metrics::counter!(HTTP_CONNECTIONS_REFUSED_TOTAL).increment(1);
                    drop(stream);
                    continue;
                }
            },
        };
        if probes {
            metrics::counter!(HTTP_CONNECTIONS_REFUSED_TOTAL).increment(1);
        }
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let builders = builders.clone();
        let stopping = stopping.clone();
        let (activity, evict, registered) = open.register();
        connections.spawn(async move {
            let _held = (permit, slot, registered);
            let gauge = metrics::gauge!(HTTP_CONNECTIONS_OPEN);
            gauge.increment(1.0);
            tokio::select! {
                () = serve_connection(stream, peer, probes, router, builders, activity, header_timeout, stopping) => {}
                // Idle at the cap: its place went to a new connection.
                () = evict.cancelled() => {}
            }
            gauge.decrement(1.0);
        });
    }
    drop(listener);
    stopping.cancel();
    connections.close();
    connections.wait().await;
    Ok(())
}

/// One accepted connection, served until it ends.
#[allow(clippy::too_many_arguments)]
async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    probes: bool,
    router: Router,
    builders: Arc<Builders>,
    activity: Arc<Activity>,
    header_timeout: Duration,
    stopping: CancellationToken,
) {
    if let Some(stream) = first_line::checked(stream, header_timeout).await {
        let service = connection_service(router, peer, probes, activity.clone(), header_timeout);
        let builder = if probes { &builders.probes } else { &builders.served };
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        tokio::pin!(connection);
        let ended = tokio::select! {
            ended = connection.as_mut() => ended,
            () = stopping.cancelled() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
            () = activity.idle_for(header_timeout) => {
                connection.as_mut().graceful_shutdown();
                tokio::time::timeout(CLOSING_GRACE, connection).await.unwrap_or(Ok(()))
            }
        };
        if let Err(error) = ended {
            tracing::debug!(%error, %peer, "connection ended with an error");
        }
    }
}

/// The connections open now, each with what it is doing, so that the one idle longest can be
/// asked to leave when the cap is reached.
#[derive(Default)]
struct OpenConnections {
    next: std::sync::atomic::AtomicU64,
    open: std::sync::Mutex<std::collections::HashMap<u64, (Arc<Activity>, CancellationToken)>>,
}

/// Removes its connection from `OpenConnections` when dropped.
struct Registered(Arc<OpenConnections>, u64);

impl Drop for Registered {
    fn drop(&mut self) {
        self.0.open.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.1);
    }
}

impl OpenConnections {
    fn register(self: &Arc<Self>) -> (Arc<Activity>, CancellationToken, Registered) {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (activity, evict) = (Arc::new(Activity::default()), CancellationToken::new());
        self.open.lock().unwrap_or_else(|p| p.into_inner()).insert(id, (activity.clone(), evict.clone()));
        (activity, evict, Registered(self.clone(), id))
    }

    /// Asks the `EVICTED_AT_ONCE` connections idle longest to close (one scan makes room for a
    /// burst of new ones); whether there was one.
    fn evict_idlest(&self) -> bool {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mut idle: Vec<_> = open
            .values()
            .filter(|(_, evict)| !evict.is_cancelled())
            .filter_map(|(activity, evict)| Some((activity.quiet_since()?, evict)))
            .collect();
        if idle.len() > EVICTED_AT_ONCE {
            idle.select_nth_unstable_by_key(EVICTED_AT_ONCE, |(since, _)| *since);
            idle.truncate(EVICTED_AT_ONCE);
        }
        idle.iter().for_each(|(_, evict)| evict.cancel());
        !idle.is_empty()
    }
}

/// One connection's service: the router with the peer's address, or, past the cap, the router
/// for probes only; each request counts as in flight until its response body is done.
fn connection_service(
    router: Router,
    peer: SocketAddr,
    probes_only: bool,
    activity: Arc<Activity>,
    body_gap: Duration,
) -> TowerToHyperService<
    impl tower::Service<Request<hyper::body::Incoming>, Response = Response, Error = Infallible, Future: Send> + Clone,
> {
    TowerToHyperService::new(tower::service_fn(move |mut request: Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let (router, in_flight) = (router.clone(), activity.begin());
        async move {
            if probes_only && !matches!(request.uri().path(), "/health" | "/ready") {
                return Ok(too_many_connections());
            }
            let response = router.oneshot(request.map(|body| deadlines::limit_stalls(body, body_gap))).await?;
            Ok(response.map(|body| Tracked::wrap(body, in_flight)))
        }
    }))
}

/// The answer on a connection past the cap: the API's error JSON, which the router's layers
/// would write, written here because the router is not asked.
fn too_many_connections() -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let body = serde_json::json!({"error": {
        "code": "UNAVAILABLE",
        "message": "too many open connections; try again shortly",
        "request_id": request_id,
    }});
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    if let Ok(id) = HeaderValue::from_str(&request_id) {
        headers.insert("x-request-id", id);
    }
    response
}

/// hyper's settings: served connections keep alive (idle for at most the header deadline);
/// probe connections answer one request and close.
struct Builders {
    served: auto::Builder<TokioExecutor>,
    probes: auto::Builder<TokioExecutor>,
}

impl Builders {
    fn new(header_timeout: Duration) -> Self {
        let build = |keep_alive: bool| {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).header_read_timeout(header_timeout).keep_alive(keep_alive);
            builder.http2().timer(TokioTimer::new()).keep_alive_interval(Duration::from_secs(30));
            builder
        };
        Self { served: build(true), probes: build(false) }
    }
}

/// Logs accept errors at most once a second: under descriptor exhaustion they come in floods.
#[derive(Default)]
struct AcceptErrors {
    last_logged: Option<Instant>,
}

impl AcceptErrors {
    fn log(&mut self, error: &std::io::Error) {
        if self.last_logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            self.last_logged = Some(Instant::now());
            tracing::warn!(%error, "accepting a connection failed");
        }
    }
}
