//! Prometheus metrics: every series this service exports is named here, once, with its help
//! text, so runbooks and alerts have one place to check names against.
//!
//! Code records through the `metrics` facade (like logging through `tracing`); this module
//! installs the recorder and renders `/metrics`. Label values are always from small fixed sets
//! (route templates, outcomes, status codes), never ids or keys.

use std::sync::OnceLock;

use metrics::{Counter, Unit, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const HTTP_REQUESTS_TOTAL: &str = "http_requests_total";
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "http_request_duration_seconds";
pub const COMMAND_EXECUTIONS_TOTAL: &str = "command_executions_total";
pub const COMMAND_DURATION_SECONDS: &str = "command_duration_seconds";
pub const RATE_LIMITED_REQUESTS_TOTAL: &str = "rate_limited_requests_total";
pub const CACHE_REQUESTS_TOTAL: &str = "cache_requests_total";
pub const COMMAND_QUEUE_DEPTH: &str = "command_queue_depth";
pub const COMMAND_QUEUE_WAIT_SECONDS: &str = "command_queue_wait_seconds";
pub const CIRCUIT_BREAKER_STATE: &str = "circuit_breaker_state";
pub const WEBHOOK_DELIVERIES_TOTAL: &str = "webhook_deliveries_total";
pub const AUDIT_REJECTIONS_SUPPRESSED_TOTAL: &str = "audit_rejections_suppressed_total";
pub const HTTP_CONNECTIONS_OPEN: &str = "http_connections_open";
pub const HTTP_CONNECTIONS_REFUSED_TOTAL: &str = "http_connections_refused_total";
pub const DATABASE_UP: &str = "database_up";
pub const AUDIT_BACKLOG_DROPPED_TOTAL: &str = "audit_backlog_dropped_total";
pub const BUILD_INFO: &str = "rdev_build_info";
pub const KUBE_WATCH_STATE: &str = "kube_watch_state";
pub const KUBE_WATCH_EVENTS_TOTAL: &str = "kube_watch_events_total";
pub const TERMINAL_SESSIONS_ACTIVE: &str = "terminal_sessions_active";
pub const TERMINAL_BYTES_TOTAL: &str = "terminal_bytes_total";

/// Buckets for request and command durations: 1 ms to 5 min.
const SECONDS_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// A counter with fixed labels, looked up in the registry once and kept: `counter!` with
/// labels builds and hashes its key on every call, a measurable share of a cheap request.
/// Built from a closure that calls the `counter` macro with the series' constant and labels, so
/// the labels stay where `tests/manifests.rs` reads them.
pub struct FixedCounter {
    resolve: fn() -> Counter,
    handle: OnceLock<Counter>,
}

impl FixedCounter {
    pub const fn new(resolve: fn() -> Counter) -> Self {
        Self { resolve, handle: OnceLock::new() }
    }

    pub fn increment(&self, by: u64) {
        self.handle
            .get_or_init(|| {
                // The recorder first, so the handle is never the no-op one of a process that
                // has not installed it yet.
                let _ = handle();
                (self.resolve)()
            })
            .increment(by);
    }
}

/// Installs the process-wide recorder on first use and returns the handle that renders it.
/// Several `App`s in one process (tests) share it.
pub fn handle() -> PrometheusHandle {
    HANDLE.get_or_init(install).clone()
}

fn install() -> PrometheusHandle {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .map(|builder| builder.build_recorder());
    let recorder = match recorder {
        Ok(recorder) => recorder,
        // Only an empty bucket list fails, and ours is not empty.
        Err(_) => PrometheusBuilder::new().build_recorder(),
    };
    let handle = recorder.handle();
    // Fails only if another recorder was installed first; then ours stays unused but harmless.
    let _ = metrics::set_global_recorder(recorder);
    describe();
    handle
}

fn describe() {
    describe_counter!(HTTP_REQUESTS_TOTAL, "HTTP requests served, by method, route template and status code.");
    describe_histogram!(
        HTTP_REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Time to answer HTTP requests, by method and route."
    );
    describe_counter!(
        COMMAND_EXECUTIONS_TOTAL,
        "Commands run (now or from the queue), by executor and outcome (succeeded, failed, timed_out, cancelled, error)."
    );
    describe_histogram!(COMMAND_DURATION_SECONDS, Unit::Seconds, "Run time of commands, by executor.");
    describe_counter!(
        RATE_LIMITED_REQUESTS_TOTAL,
        "Requests refused with 429 because their API key's rate limit was used up."
    );
    describe_counter!(CACHE_REQUESTS_TOTAL, "Cache lookups, by cache and result (hit, miss).");
    describe_gauge!(COMMAND_QUEUE_DEPTH, "Commands waiting in the queue, by priority (0 to 9; 9 runs first).");
    describe_histogram!(
        COMMAND_QUEUE_WAIT_SECONDS,
        Unit::Seconds,
        "Time queued commands waited before a worker started them."
    );
    describe_gauge!(
        CIRCUIT_BREAKER_STATE,
        "State of the circuit breaker around an executor: 0 closed, 1 half-open, 2 open."
    );
    describe_counter!(
        WEBHOOK_DELIVERIES_TOTAL,
        "Webhook delivery attempts, by outcome: delivered, retrying (failed, another attempt is scheduled), failed (gave up)."
    );
    describe_counter!(
        AUDIT_REJECTIONS_SUPPRESSED_TOTAL,
        "Refused attempts not written to the audit log because their client (or this replica) used up its budget for the minute."
    );
    metrics::counter!(AUDIT_REJECTIONS_SUPPRESSED_TOTAL).absolute(0);
    describe_gauge!(HTTP_CONNECTIONS_OPEN, "TCP connections open to the HTTP server.");
    describe_gauge!(
        KUBE_WATCH_STATE,
        "The pod watch behind the Kubernetes projects: 0 listing (not ready yet), 1 watching, 2 reconnecting (serving the last known pods)."
    );
    describe_counter!(KUBE_WATCH_EVENTS_TOTAL, "Pod watch events, by type (apply, delete, relist, error).");
    describe_gauge!(TERMINAL_SESSIONS_ACTIVE, "Interactive terminals open on this replica.");
    gauge!(TERMINAL_SESSIONS_ACTIVE).set(0.0);
    describe_counter!(
        TERMINAL_BYTES_TOTAL,
        "Bytes through interactive terminals, by direction: in (keystrokes), out (terminal output)."
    );
    for direction in ["in", "out"] {
        metrics::counter!(TERMINAL_BYTES_TOTAL, "direction" => direction).absolute(0);
    }
    describe_counter!(
        HTTP_CONNECTIONS_REFUSED_TOTAL,
        "Connections accepted past RDEV_MAX_CONNECTIONS: served for /health and /ready only, or closed at once."
    );
    metrics::counter!(HTTP_CONNECTIONS_REFUSED_TOTAL).absolute(0);
    describe_counter!(
        AUDIT_BACKLOG_DROPPED_TOTAL,
        "Audit entries of executions dropped because the database stayed down until the backlog was full."
    );
    metrics::counter!(AUDIT_BACKLOG_DROPPED_TOTAL).absolute(0);
    describe_gauge!(
        DATABASE_UP,
        "1 while the database answers; 0 from the first failure that shows an outage until a probe reaches it again."
    );
    gauge!(DATABASE_UP).set(1.0);
    describe_gauge!(BUILD_INFO, "Always 1; the version label says which build is running.");
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    // Every outcome is exported from the start, so alerts on rates see 0 rather than no data.
    for outcome in ["delivered", "retrying", "failed"] {
        metrics::counter!(WEBHOOK_DELIVERIES_TOTAL, "outcome" => outcome).absolute(0);
    }
}
