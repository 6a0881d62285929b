//! `http_requests_total` and `http_request_duration_seconds` for every request (recorded by the
//! edge layer), labelled with the matched route template (never the raw path, whose ids would
//! explode the series count).
//!
//! Each series' handle is looked up once and kept (`HttpMetrics`): `counter!` with labels
//! builds, hashes and finds its key in the registry on every call, which on a cheap request
//! was a measurable share of its cost.

use std::{collections::HashMap, sync::RwLock};

use axum::http::Method;
use metrics::{Counter, Histogram, counter, histogram};

use crate::telemetry::metrics::{HTTP_REQUEST_DURATION_SECONDS, HTTP_REQUESTS_TOTAL};

/// The route label of a request no route matched (404s of unknown paths).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Methods outside the standard set share one label value, so clients cannot invent series.
const METHODS: [&str; 8] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "OTHER"];

/// The series handles of one route and method.
struct RouteSeries {
    duration: Histogram,
    /// By status code; a route answers a handful of them.
    requests: Vec<(u16, Counter)>,
}

/// The handles resolved so far, by route template and method. Bounded: routes are templates
/// and methods one of eight, and statuses are three digits.
///
/// One per process (`HttpMetrics::shared`), like the recorder the handles point into: a request
/// then refers to it without touching a reference count that both cores share.
pub struct HttpMetrics(RwLock<HashMap<String, [Option<RouteSeries>; METHODS.len()]>>);

static SHARED: std::sync::LazyLock<HttpMetrics> = std::sync::LazyLock::new(|| {
    // The recorder first: a handle resolved before it is installed would count nowhere, for good.
    drop(crate::telemetry::metrics::handle());
    HttpMetrics(RwLock::default())
});

impl HttpMetrics {
    pub(super) fn shared() -> &'static Self {
        &SHARED
    }

    /// Counts one answered request and its duration. `method` is `method_index`'s.
    pub(super) fn record(&self, route: &str, method: usize, status: u16, seconds: f64) {
        let recorded = self.read().get(route).and_then(|methods| {
            let series = methods[method].as_ref()?;
            let (_, requests) = series.requests.iter().find(|(code, _)| *code == status)?;
            requests.increment(1);
            series.duration.record(seconds);
            Some(())
        });
        if recorded.is_none() {
            let (duration, requests) = self.resolve(route, method, status);
            requests.increment(1);
            duration.record(seconds);
        }
    }

    /// Looks the series up in the registry, once per route, method and status.
    fn resolve(&self, route: &str, method: usize, status: u16) -> (Histogram, Counter) {
        let label = METHODS[method];
        let mut all = self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let series = all.entry(route.to_owned()).or_default()[method].get_or_insert_with(|| RouteSeries {
            duration: histogram!(HTTP_REQUEST_DURATION_SECONDS, "method" => label, "route" => route.to_owned()),
            requests: Vec::new(),
        });
        let requests = match series.requests.iter().find(|(code, _)| *code == status) {
            Some((_, counter)) => counter.clone(),
            None => {
                let counter = counter!(HTTP_REQUESTS_TOTAL, "method" => label, "route" => route.to_owned(),
                    "status" => status.to_string());
                series.requests.push((status, counter.clone()));
                counter
            }
        };
        (series.duration.clone(), requests)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, [Option<RouteSeries>; METHODS.len()]>> {
        self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The index of `method`'s label in `METHODS`.
pub(super) fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::POST => 1,
        Method::PUT => 2,
        Method::PATCH => 3,
        Method::DELETE => 4,
        Method::HEAD => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}
