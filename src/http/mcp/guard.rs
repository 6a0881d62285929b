//! What `/mcp` checks before the SDK sees a request: an allowed `Origin` (the MCP spec's
//! defence against DNS rebinding: 403 otherwise), and the key in `Authorization: Bearer` (what
//! MCP clients send) or `X-API-Key`. A 401 names the scheme (`WWW-Authenticate: Bearer`), and
//! every refusal here (401, 403, 429) is audited.

use axum::{
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::super::{
    auth::{AuthenticatedKey, api_key_header, request_id},
    error::{ApiError, refusal_reason},
    state::AppState,
};
use crate::domain::{Caller, DomainError};

/// What the audit shows as the command of a refused `/mcp` request.
const AUDITED_AS: &str = "MCP request";

pub async fn guard(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let client_ip = state.client_ip.of(request.extensions(), request.headers());
    let request_id = request_id(request.headers());
    let response = match forbidden_origin(&state, &request) {
        Some(origin) => ApiError::Domain(DomainError::Forbidden(format!(
            "Origin {origin} may not use /mcp (allowed: RDEV_MCP_ALLOWED_ORIGINS)"
        )))
        .into_response(),
        None => {
            bearer_as_api_key(&mut request);
            next.run(request).await
        }
    };
    let status = response.status();
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS) {
        let key_id = response.extensions().get::<AuthenticatedKey>().map(|key| key.0);
        let caller = Caller { api_key_id: key_id, request_id, client_ip };
        let reason = refusal_reason(&response);
        state.audit.record_rejection(&caller, None, Some(AUDITED_AS), Some(&reason)).await;
    }
    let mut response = response;
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"rdev-api\""));
    }
    response
}

/// The `Origin` of a request from a page whose origin is not allowed. Clients other than
/// browsers send none.
fn forbidden_origin(state: &AppState, request: &Request) -> Option<String> {
    let origin = request.headers().get(header::ORIGIN)?;
    let origin = origin.to_str().unwrap_or("(not text)");
    let allowed = state.mcp_allowed_origins.iter().any(|allowed| allowed.eq_ignore_ascii_case(origin));
    (!allowed).then(|| origin.chars().take(200).collect())
}

/// `Authorization: Bearer <key>` becomes `X-API-Key: <key>` when there is none, so the API's
/// authentication (and the tools' calls of the API) read it where they always do.
fn bearer_as_api_key(request: &mut Request) {
    if request.headers().contains_key(api_key_header()) {
        return;
    }
    let token = request.headers().get(header::AUTHORIZATION).and_then(|value| {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
    });
    if let Some(mut token) = token.and_then(|token| HeaderValue::from_str(&token).ok()) {
        // Marked as the edge marks the headers it sees: no log or span prints it.
        token.set_sensitive(true);
        request.headers_mut().insert(api_key_header(), token);
    }
}
