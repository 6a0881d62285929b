//! The HTTP adapter: axum router, middleware and handlers over the services.
//!
//! Layers, outermost first: the edge (request id, tracing span, panic catching, error rendering
//! in the API's JSON shape, HTTP metrics: one layer, see `edge`), body limit. Routes that need a
//! key sit behind `auth::authenticate`; each handler names its scope.

pub mod auth;
pub mod client_ip;
mod console;
mod edge;
pub mod error;
pub mod extract;
pub mod handlers;
pub mod idempotency;
mod mcp;
mod metrics;
mod openapi;
mod refusals;
mod rendered;
pub mod request_id;
pub mod server;
pub mod state;

use std::sync::Arc;

use axum::{Router, extract::DefaultBodyLimit, http::header, middleware, routing::get};
use tower::ServiceBuilder;
use tower_http::{compression::CompressionLayer, sensitive_headers::SetSensitiveRequestHeadersLayer};
use utoipa_axum::{router::OpenApiRouter, routes};

use handlers::{audit, commands, files, health, keys, output, projects, sessions, shell, terminal, webhooks};

pub use state::AppState;

pub fn router(state: AppState) -> Router {
    let max_body_bytes = state.max_body_bytes;
    let authenticate = || middleware::from_fn_with_state(state.clone(), auth::authenticate);
    let public = OpenApiRouter::new()
        .routes(routes!(health::get_health))
        .routes(routes!(health::get_ready))
        .routes(routes!(health::get_metrics));
    let protected = OpenApiRouter::new()
        .routes(routes!(projects::list_projects))
        .routes(routes!(projects::get_project))
        .routes(routes!(keys::create_api_key, keys::list_api_keys))
        .routes(routes!(keys::get_api_key, keys::update_api_key, keys::revoke_api_key))
        .routes(routes!(keys::rotate_api_key))
        .routes(routes!(audit::list_audit))
        .routes(routes!(commands::list_commands))
        .routes(routes!(commands::get_command))
        .routes(routes!(commands::cancel_command))
        .routes(routes!(output::get_output))
        .routes(routes!(output::follow_output))
        .routes(routes!(webhooks::create_webhook, webhooks::list_webhooks))
        .routes(routes!(webhooks::get_webhook, webhooks::update_webhook, webhooks::delete_webhook))
        .routes(routes!(webhooks::list_deliveries))
        .routes(routes!(webhooks::retry_delivery))
        .routes(routes!(files::list_files, files::delete_file))
        .routes(routes!(files::read_file, files::write_file))
        .routes(routes!(sessions::list_sessions))
        .routes(routes!(sessions::get_session, sessions::delete_session))
        .routes(routes!(terminal::create_ticket))
        .route_layer(authenticate());
    // The terminal's WebSocket: a browser authenticates with a ticket instead of a header.
    let terminal = OpenApiRouter::new()
        .routes(routes!(terminal::open_terminal))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::authenticate_terminal));
    // Attempts to execute: refusals are audited around authentication itself.
    let execute = OpenApiRouter::new()
        .routes(routes!(shell::run_shell))
        .routes(routes!(commands::enqueue_command))
        .routes(routes!(sessions::create_session))
        .routes(routes!(sessions::run_in_session))
        .route_layer(authenticate())
        .route_layer(middleware::from_fn_with_state(state.clone(), refusals::audit_rejected_executions))
        .route_layer(DefaultBodyLimit::max(state.execute_body_limit()));
    let (router, api) = OpenApiRouter::with_openapi(openapi::base())
        .merge(public)
        .merge(protected)
        .merge(terminal)
        .merge(execute)
        .split_for_parts();
    let document: Arc<str> = openapi::complete(api).to_json().unwrap_or_default().into();

    // What a browser downloads whole (the console's pages and scripts, the OpenAPI document) is
    // gzipped for whoever asks; the API's own answers are small and stay on the lean path.
    let downloads = Router::new()
        .route(
            "/openapi.json",
            get(move || async move { ([(header::CONTENT_TYPE, "application/json")], document.to_string()) }),
        )
        .merge(console::routes())
        .layer(CompressionLayer::new());

    // The API's routes, whole, are what /mcp's tools call.
    let api = router.with_state(state.clone());
    let mcp = mcp::routes(api.clone(), &state);
    api.merge(downloads).merge(mcp).layer(
        ServiceBuilder::new()
            // Secrets in headers print as `Sensitive` wherever a request is logged or traced. (A
            // terminal's `ticket` is in the query, which no span or log records.)
            .layer(SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION, auth::api_key_header()]))
            .layer(edge::EdgeLayer::default())
            .layer(DefaultBodyLimit::max(max_body_bytes)),
    )
}
