//! Telemetry: logs (text for people, JSON for machines, `RDEV_LOG_FORMAT`, filtered by
//! `RUST_LOG`), traces exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and
//! Prometheus metrics (`metrics`).
//!
//! Spans are batched and exported from a background thread, so a slow or missing collector never
//! slows a request; they are flushed at shutdown.

pub mod metrics;
pub mod propagation;

use std::io::IsTerminal as _;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing_subscriber::{EnvFilter, Layer as _, layer::SubscriberExt as _, util::SubscriberInitExt as _};

use crate::config::LogFormat;

const DEFAULT_FILTER: &str = "info,sqlx=warn";

/// Keeps the trace exporter alive; `shutdown` flushes what is still buffered.
#[must_use = "dropping the guard without shutdown loses the last spans"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes and stops the exporter. Blocking: call it outside the async runtime.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            let _ = provider.force_flush();
            let _ = provider.shutdown();
        }
    }
}

/// Installs logging and, with an endpoint, trace export. Call once, before the async runtime
/// starts (the exporter's HTTP client is a blocking one with a runtime of its own).
pub fn init(format: LogFormat, otlp_endpoint: Option<&str>) -> anyhow::Result<Telemetry> {
    let provider = otlp_endpoint.map(tracer_provider).transpose()?;
    let otel = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("rdev-api")));
    let fmt = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stdout)
            .with_ansi(std::io::stdout().is_terminal())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_writer(std::io::stdout)
            .boxed(),
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // A second init (several apps in one test process) keeps the first subscriber.
    let _ = tracing_subscriber::registry().with(filter).with(fmt).with(otel).try_init();
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    Ok(Telemetry { provider })
}

/// OTLP over HTTP with protobuf, to `<endpoint>/v1/traces` as the OTLP convention has it.
fn tracer_provider(endpoint: &str) -> anyhow::Result<SdkTracerProvider> {
    let endpoint = endpoint.trim_end_matches('/');
    let url = if endpoint.ends_with("/v1/traces") { endpoint.to_owned() } else { format!("{endpoint}/v1/traces") };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .build()
        .context("setting up the OTLP exporter (OTEL_EXPORTER_OTLP_ENDPOINT)")?;
    let resource = Resource::builder().with_service_name("rdev-api").build();
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
}
