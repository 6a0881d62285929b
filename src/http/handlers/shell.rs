//! `POST /projects/{id}/shell`: run a command now and wait for it.

use axum::{Json, extract::State};

use crate::{
    domain::{Execution, ProjectId, ShellRequest},
    http::{
        auth::{Authorized, scope},
        error::{ApiError, ErrorBody},
        extract::{ApiJson, ApiPath},
        state::AppState,
    },
};

#[utoipa::path(
    post, path = "/projects/{id}/shell", tag = "commands", security(("api_key" = [])),
    params(("id" = String, Path, description = "Project id")),
    request_body = ShellRequest,
    responses(
        (status = 200, description = "The command ran; a non-zero exit is still 200", body = Execution),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "project not found", body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub async fn run_shell(
    auth: Authorized<scope::CommandsExecute>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<ShellRequest>,
) -> Result<Json<Execution>, ApiError> {
    let id = ProjectId::parse(&id)?;
    Ok(Json(state.commands.run_shell(&auth.caller, &id, request).await?))
}
