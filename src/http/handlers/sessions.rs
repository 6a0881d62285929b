//! Sessions: `POST /projects/{id}/sessions`, `GET /sessions`, `GET|DELETE /sessions/{id}`, and
//! `POST /sessions/{id}/shell` (sync, or SSE like `/shell`).

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    domain::{CreateSessionRequest, PageRequest, ProjectId, Scope, Session, SessionExecution, ShellRequest},
    http::{
        auth::{Authorized, scope},
        error::{ApiError, ErrorBody},
        extract::{ApiJson, ApiPath, ApiQuery},
        handlers::{
            output::SseEvent,
            shell::{ANSWER_MARGIN, stream, wants_event_stream},
        },
        idempotency::{self, Keyed},
        state::AppState,
    },
    services::Owner,
};

/// Whose sessions a key sees: its own, or every one with `admin`.
fn owner<S>(auth: &Authorized<S>) -> Owner {
    if auth.key.allows(Scope::Admin) { Owner::Anyone } else { Owner::Key(auth.caller.api_key_id) }
}

/// Start a session
///
/// A session keeps a folder and environment variables from one command to the next: each
/// command of `POST /sessions/{id}/shell` starts where the last one ended, with what it
/// exported. It lives `RDEV_SESSION_IDLE_TIMEOUT` past its last use, on every replica. Only the
/// key that created it (or an `admin` key) sees it. Scope `commands:execute`.
#[utoipa::path(
    post, path = "/projects/{id}/sessions", tag = "sessions", security(("api_key" = [])),
    params(("id" = String, Path, description = "Project id", pattern = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")),
    request_body = CreateSessionRequest,
    responses(
        (status = 201, body = Session),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "project not found", body = ErrorBody), (status = 429, body = ErrorBody),
    )
)]
pub async fn create_session(
    auth: Authorized<scope::CommandsExecute>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<CreateSessionRequest>,
) -> Result<(StatusCode, Json<Session>), ApiError> {
    let id = ProjectId::parse(&id)?;
    Ok((StatusCode::CREATED, Json(state.sessions.create(&auth.caller, &id, request, auth.quotas(&state)).await?)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SessionParams {
    /// Only this project.
    #[param(pattern = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")]
    project_id: Option<String>,
    /// Items per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SessionList {
    sessions: Vec<Session>,
    next_cursor: Option<String>,
}

/// List sessions
///
/// This key's sessions that have not expired, newest first (every key's for `admin`).
/// Scope `commands:read`.
#[utoipa::path(
    get, path = "/sessions", tag = "sessions", security(("api_key" = [])),
    params(SessionParams),
    responses((status = 200, body = SessionList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody))
)]
pub async fn list_sessions(
    auth: Authorized<scope::CommandsRead>,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<SessionParams>,
) -> Result<Json<SessionList>, ApiError> {
    let project_id = params.project_id.as_deref().map(ProjectId::parse).transpose()?;
    let page = PageRequest::parse(params.limit, params.cursor.as_deref())?;
    let page = state.sessions.list(project_id, owner(&auth), &page).await?;
    Ok(Json(SessionList { sessions: page.items, next_cursor: page.next_cursor }))
}

/// Get a session
///
/// Where its next command starts and with which variables. Scope `commands:read`.
#[utoipa::path(
    get, path = "/sessions/{id}", tag = "sessions", security(("api_key" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Session), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody))
)]
pub async fn get_session(
    auth: Authorized<scope::CommandsRead>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Session>, ApiError> {
    Ok(Json(state.sessions.get(id, owner(&auth)).await?))
}

/// End a session
///
/// It is gone at once (a command running in it goes on to its end). Scope `commands:execute`.
#[utoipa::path(
    delete, path = "/sessions/{id}", tag = "sessions", security(("api_key" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 204, description = "Ended"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody))
)]
pub async fn delete_session(
    auth: Authorized<scope::CommandsExecute>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    state.sessions.delete(id, owner(&auth)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Run a command in a session
///
/// Like `POST /projects/{id}/shell`, in the session's folder with its variables (the request's
/// `env` and `workdir` apply to this command only). Afterwards the session keeps the folder the
/// command ended in (when inside the project) and the variables it exported or unset; a
/// command that timed out or was killed leaves it as it was. One command at a time: a second
/// while one runs is a `409`. Scope `commands:execute`.
#[utoipa::path(
    post, path = "/sessions/{id}/shell", tag = "sessions", security(("api_key" = [])),
    params(
        ("id" = Uuid, Path),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$",
            description = "1 to 255 visible ASCII characters, per API key, remembered 24 h: a repeat of the same \
                request answers what the first did (with `Idempotent-Replayed: true`) instead of running again"),
    ),
    request_body = ShellRequest,
    responses(
        (status = 200, description = "The command ran; a non-zero exit is still 200. With `Accept: text/event-stream`, \\
            `stdout`/`stderr` events as output arrives, then an `exit` event (the Execution without output)",
            content((SessionExecution = "application/json"), (SseEvent = "text/event-stream"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "No such session (or it expired)", body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 409, description = "Another command is running in the session, or a request with this Idempotency-Key still runs", body = ErrorBody),
        (status = 422, description = "IDEMPOTENCY_KEY_REUSED: the key was used for another request", body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody),
    )
)]
pub async fn run_in_session(
    auth: Authorized<scope::CommandsExecute>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    headers: HeaderMap,
    uri: Uri,
    ApiJson(request): ApiJson<ShellRequest>,
) -> Result<Response, ApiError> {
    let key = idempotency::key_of(&headers)?;
    let fingerprinted = request.clone();
    let sse = wants_event_stream(&headers);
    let prepared = state.sessions.prepare_shell(id, owner(&auth), request, sse).await?;
    let bounds = auth.bounds(&state)?;
    let hold = prepared.timeout() + ANSWER_MARGIN;
    let reservation = match idempotency::begin(&state, &auth.caller, key, uri.path(), &fingerprinted, hold).await? {
        Keyed::Replay(answer) => return Ok(answer),
        Keyed::Run(reservation) => reservation,
    };
    if let Err(busy) = state.sessions.take(id, &prepared).await {
        if let Some(reservation) = reservation {
            reservation.release().await;
        }
        return Err(busy.into());
    }
    if sse {
        return Ok(stream(&state, auth.caller, bounds, prepared, reservation, true).into_response());
    }
    let running = state.commands.start(auth.caller, prepared, None, bounds);
    let finished = running.finished_in_session().await.and_then(|(execution, session)| {
        session
            .map(|session| SessionExecution { execution, session })
            .ok_or_else(|| crate::domain::DomainError::internal(anyhow::anyhow!("a session's command left no session")))
    });
    idempotency::answer(reservation, StatusCode::OK, finished, |_| None).await
}
