//! `/mcp`: the API as a remote MCP server (Streamable HTTP, through the official SDK, `rmcp`),
//! so a coding agent can use a project as its workspace with a URL and a key.
//!
//! Stateless: no MCP session is kept, every request stands alone, so any replica serves any
//! request and a client that drops and reconnects simply goes on. Each tool calls the API's own
//! route in process (`api_call`), with the caller's key: the route's scopes, allowlist, quotas,
//! validation, audit and revocation apply, and no rule is implemented twice. The request to
//! `/mcp` is what the key's rate limit counts, once, whatever its tool calls.

mod api_call;
mod guard;
mod server;
mod tools;

use std::{sync::Arc, time::Duration};

use axum::{Router, middleware};
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::never::NeverSessionManager,
};

use super::{auth, state::AppState};

/// Comments on an open event stream, so proxies and clients see it alive.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The `/mcp` route. `api` is the API's router, which the tools call.
pub fn routes(api: Router, state: &AppState) -> Router {
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        // Every request needs a key, which a DNS-rebinding page does not have; the `Origin`
        // check the spec asks for is `guard`'s, answering in the API's JSON.
        .disable_allowed_hosts()
        .disable_allowed_origins()
        .with_max_request_body_bytes(state.execute_body_limit())
        .with_sse_keep_alive(Some(KEEP_ALIVE));
    let catalog = Arc::new(tools::Catalog::new());
    let service = StreamableHttpService::new(
        move || Ok(server::McpServer::new(api.clone(), catalog.clone())),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    Router::new()
        .route_service("/mcp", service)
        .layer(middleware::from_fn_with_state(state.clone(), auth::authenticate))
        .layer(middleware::from_fn_with_state(state.clone(), guard::guard))
}
