//! The audit of refused attempts to execute: every 4xx answer on an execute route (no key, bad
//! key, missing scope, outside the allowlist, rate limited, invalid request, unknown project,
//! body too large) leaves a `rejected` row. Successful and failed executions are audited by the
//! command service itself, before it answers.

use axum::{
    body::{Body, to_bytes},
    extract::{FromRequestParts as _, RawPathParams, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{
    auth::{AuthenticatedKey, request_id},
    error::ApiError,
    state::AppState,
};
use crate::domain::{Caller, DomainError, ProjectId};

pub async fn audit_rejected_executions(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let client_ip = state.client_ip.of(request.extensions(), request.headers());
    let request_id = request_id(request.headers());
    let (mut parts, body) = request.into_parts();
    // `/projects/{id}/…` names its project; a session's route names the session.
    let names_project = parts.uri.path().starts_with("/projects/");
    let project_id = RawPathParams::from_request_parts(&mut parts, &()).await.ok().and_then(|params| {
        params.iter().find(|(name, _)| *name == "id" && names_project).and_then(|(_, id)| ProjectId::parse(id).ok())
    });

    // The body is kept (it is at most the body limit) so a refusal can record the command.
    let (response, body) = match to_bytes(body, state.execute_body_limit()).await {
        Ok(bytes) => (next.run(Request::from_parts(parts, Body::from(bytes.clone()))).await, bytes),
        Err(error) if super::server::is_stalled_body(&error) => {
            (ApiError::Domain(DomainError::BodyStalled).into_response(), Default::default())
        }
        Err(_) => (ApiError::PayloadTooLarge(state.execute_body_limit()).into_response(), Default::default()),
    };
    if response.status().is_client_error() {
        let key_id = response.extensions().get::<AuthenticatedKey>().map(|key| key.0);
        let caller = Caller { api_key_id: key_id, request_id, client_ip };
        let command = command_of(&body);
        let reason = super::error::refusal_reason(&response);
        state.audit.record_rejection(&caller, project_id.as_ref(), command.as_deref(), Some(&reason)).await;
    }
    response
}

/// The `command` of a JSON body, if it has one (the audit service shortens it).
fn command_of(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    Some(value.get("command")?.as_str()?.to_owned())
}
