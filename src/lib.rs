//! rdev-api: run shell commands in development environments over HTTP.
//!
//! # Layout (hexagonal: ports and adapters)
//!
//! - [`domain`]: plain types, validation and `DomainError`. Depends on nothing else here.
//! - [`ports`]: the traits services need (storage, project source, executor, clock, health).
//! - [`services`]: business rules over `Arc<dyn Port>`.
//! - [`adapters`]: the ports in real technology (Postgres, SQLite, local processes).
//! - [`http`]: axum router, middleware, handlers and the one error-to-HTTP mapping.
//! - [`app`]: the only place that picks adapters and wires them into services.
//! - [`config`]: every setting, as one clap struct (flags and env vars).
//!
//! Dependencies point inward: `http → services → ports → domain`; `adapters → ports → domain`.

// A request must never be able to panic the server: failures are `DomainError`s.
#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod adapters;
pub mod app;
pub mod cli;
pub mod config;
pub mod domain;
pub mod http;
pub mod ports;
pub mod services;
pub mod telemetry;

pub use app::App;
pub use config::Config;

/// Makes ring the process-wide rustls provider, once, before any TLS client is built: kube,
/// reqwest (webhooks, and the OTLP exporter) take theirs from it; ring keeps TLS pure Rust.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
