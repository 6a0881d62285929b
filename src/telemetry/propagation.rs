//! W3C trace context from incoming requests: a client's `traceparent` makes our spans part of
//! its trace.

use axum::http::{HeaderMap, HeaderName};
use opentelemetry::propagation::Extractor;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Makes `span` a child of the trace the request's headers carry, if any. Most requests carry
/// none, and a span logging is not interested in has nothing to join: both skip the extraction
/// (a lock, two header lookups and a context built per request).
pub fn adopt_remote_parent(span: &tracing::Span, headers: &HeaderMap) {
    if span.is_disabled() || !headers.contains_key(&TRACEPARENT) {
        return;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&Headers(headers)));
    let _ = span.set_parent(parent);
}

/// The W3C `traceparent` of the current span, when traces are being recorded.
pub fn current_traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    let mut carrier = std::collections::HashMap::new();
    opentelemetry::global::get_text_map_propagator(|propagator| propagator.inject_context(&context, &mut carrier));
    carrier.remove("traceparent")
}

/// Makes `span` a child of the trace a stored `traceparent` names (a webhook delivery joins the
/// trace of the command that raised it).
pub fn adopt_traceparent(span: &tracing::Span, traceparent: &str) {
    let carrier = std::collections::HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&carrier));
    let _ = span.set_parent(parent);
}
