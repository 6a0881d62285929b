//! The command queue: `POST /projects/{id}/commands`, `GET /commands`, `GET /commands/{id}`,
//! `POST /commands/{id}/cancel`.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode, Uri},
    response::Response,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    domain::{Command, CommandFilter, CommandStatus, EnqueueRequest, PageRequest, ProjectId},
    http::{
        auth::{Authorized, scope},
        error::{ApiError, ErrorBody},
        extract::{ApiJson, ApiPath, ApiQuery},
        idempotency::{self, Keyed},
        state::AppState,
    },
    services::Cancelled,
};

/// Queue a command
///
/// Stores the command for the queue workers of any replica and answers at once with `202` and
/// `Location: /commands/{id}`. Queued commands survive the client's disconnects and a replica's
/// death (`max_attempts` above 1 allows running it again after one). Scope `commands:execute`.
#[utoipa::path(
    post, path = "/projects/{id}/commands", tag = "commands", security(("api_key" = [])),
    params(
        ("id" = String, Path, description = "Project id", pattern = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$",
            description = "1 to 255 visible ASCII characters, per API key, remembered 24 h: a repeat of the same \
                request answers what the first did (with `Idempotent-Replayed: true`) instead of running again"),
    ),
    request_body = EnqueueRequest,
    responses(
        (status = 202, description = "Queued; `Location` is the command", body = Command),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "project not found", body = ErrorBody),
        (status = 409, description = "A request with this Idempotency-Key is still being answered", body = ErrorBody),
        (status = 422, description = "IDEMPOTENCY_KEY_REUSED: the key was used for another request", body = ErrorBody),
        (status = 429, body = ErrorBody),
    )
)]
pub async fn enqueue_command(
    auth: Authorized<scope::CommandsExecute>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    uri: Uri,
    ApiJson(request): ApiJson<EnqueueRequest>,
) -> Result<Response, ApiError> {
    let id = ProjectId::parse(&id)?;
    let key = idempotency::key_of(&headers)?;
    let reservation = match idempotency::begin(&state, &auth.caller, key, uri.path(), &request, ENQUEUE_HOLD).await? {
        Keyed::Replay(answer) => return Ok(answer),
        Keyed::Run(reservation) => reservation,
    };
    let quotas = auth.quotas(&state);
    let enqueued = state.queue.enqueue(auth.caller, &id, request, quotas).await;
    idempotency::answer(reservation, StatusCode::ACCEPTED, enqueued, |command| {
        Some(format!("/commands/{}", command.id))
    })
    .await
}

/// How long storing a command may take before its `Idempotency-Key` counts as abandoned.
const ENQUEUE_HOLD: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CommandParams {
    /// Only this project.
    #[param(pattern = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")]
    project_id: Option<String>,
    /// queued, running, succeeded, failed, timed_out or cancelled.
    status: Option<CommandStatus>,
    /// Items per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CommandList {
    commands: Vec<Command>,
    next_cursor: Option<String>,
}

/// List queued commands
///
/// Newest first, optionally filtered by project and status. Scope `commands:read`.
#[utoipa::path(
    get, path = "/commands", tag = "commands", security(("api_key" = [])),
    params(CommandParams),
    responses((status = 200, body = CommandList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody))
)]
pub async fn list_commands(
    auth: Authorized<scope::CommandsRead>,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<CommandParams>,
) -> Result<Json<CommandList>, ApiError> {
    let filter = CommandFilter {
        project_id: params.project_id.as_deref().map(ProjectId::parse).transpose()?,
        status: params.status,
        reader: auth.command_reader(),
    };
    let page = state.queue.list(&filter, &PageRequest::parse(params.limit, params.cursor.as_deref())?).await?;
    Ok(Json(CommandList { commands: page.items, next_cursor: page.next_cursor }))
}

/// Get a queued command
///
/// Its status, attempts and, once it finished, exit code and output. Scope `commands:read`.
#[utoipa::path(
    get, path = "/commands/{id}", tag = "commands", security(("api_key" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Command), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody))
)]
pub async fn get_command(
    auth: Authorized<scope::CommandsRead>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Command>, ApiError> {
    Ok(Json(state.queue.get(id, auth.command_reader()).await?))
}

/// Cancel a queued command
///
/// A queued command is cancelled at once; a running one is killed by its worker, on whichever
/// replica, and the answer waits a little for that (`202` when it has not confirmed yet). A
/// finished command is a `409`. Scope `commands:execute`.
#[utoipa::path(
    post, path = "/commands/{id}/cancel", tag = "commands", security(("api_key" = [])),
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "Cancelled (a running command was killed)", body = Command),
        (status = 202, description = "Its worker was asked to stop it and has not confirmed yet", body = Command),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "Already finished", body = ErrorBody),
    )
)]
pub async fn cancel_command(
    auth: Authorized<scope::CommandsExecute>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<(StatusCode, Json<Command>), ApiError> {
    Ok(match state.queue.cancel(id, auth.command_reader()).await? {
        Cancelled::Done(command) => (StatusCode::OK, Json(command)),
        Cancelled::Pending(command) => (StatusCode::ACCEPTED, Json(command)),
    })
}
