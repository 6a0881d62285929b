//! `POST /projects/{id}/shell`: run a command now and wait for it, or, with
//! `Accept: text/event-stream`, stream its output as it arrives.
//!
//! A stream is Server-Sent Events: `stdout` and `stderr` events carry output chunks, then one
//! `exit` event carries the `Execution` without its output (or an `error` event the error body).
//! A client that disconnects kills the command (the request or the stream holds its handle);
//! it is audited however it ends.

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode, Uri, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures_util::Stream;
use tokio::sync::mpsc;

use crate::{
    domain::{Caller, Execution, ProjectId, SessionExecution, ShellRequest},
    http::{
        auth::{Authorized, scope},
        error::{ApiError, ErrorBody},
        extract::{ApiJson, ApiPath},
        handlers::output::{SseEvent, exit_event, output_event},
        idempotency::{self, Keyed},
        state::AppState,
    },
    ports::OutputChunk,
    services::{KeyBounds, PreparedShell, Reservation},
};

/// Run a command now
///
/// Runs `/bin/sh -c <command>` in the project and answers when it ends: a non-zero exit is still
/// `200`. With `Accept: text/event-stream` the output streams as it arrives. Every run is audited;
/// a client that disconnects kills it. Scope `commands:execute`.
#[utoipa::path(
    post, path = "/projects/{id}/shell", tag = "commands", security(("api_key" = [])),
    params(
        ("id" = String, Path, description = "Project id", pattern = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$",
            description = "1 to 255 visible ASCII characters, per API key, remembered 24 h: a repeat of the same \
                request answers what the first did (with `Idempotent-Replayed: true`) instead of running again"),
    ),
    request_body = ShellRequest,
    responses(
        (status = 200, description = "The command ran; a non-zero exit is still 200. With `Accept: text/event-stream`, \\
            `stdout`/`stderr` events as output arrives, then an `exit` event (the Execution without output)",
            content((Execution = "application/json"), (SseEvent = "text/event-stream"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "project not found", body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 409, description = "A request with this Idempotency-Key is still running", body = ErrorBody),
        (status = 422, description = "IDEMPOTENCY_KEY_REUSED: the key was used for another request", body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody),
    )
)]
pub async fn run_shell(
    auth: Authorized<scope::CommandsExecute>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    uri: Uri,
    ApiJson(request): ApiJson<ShellRequest>,
) -> Result<Response, ApiError> {
    let id = ProjectId::parse(&id)?;
    let key = idempotency::key_of(&headers)?;
    let fingerprinted = request.clone();
    let sse = wants_event_stream(&headers);
    // Everything that can refuse the request is checked before a stream starts or a key is held.
    let prepared = if sse {
        state.commands.prepare_stream(&id, request).await?
    } else {
        state.commands.prepare(&id, request).await?
    };
    let bounds = auth.bounds(&state)?;
    let hold = prepared.timeout() + ANSWER_MARGIN;
    let reservation = match idempotency::begin(&state, &auth.caller, key, uri.path(), &fingerprinted, hold).await? {
        Keyed::Replay(answer) => return Ok(answer),
        Keyed::Run(reservation) => reservation,
    };
    if sse {
        return Ok(stream(&state, auth.caller, bounds, prepared, reservation, false).into_response());
    }
    // Dropped with this request (the client went away), the command is killed, and audited;
    // the key, if any, is given up.
    let running = state.commands.start(auth.caller, prepared, None, bounds);
    idempotency::answer(reservation, StatusCode::OK, running.finished().await, |_| None).await
}

/// How much longer than its command's timeout a request may take to answer before its
/// `Idempotency-Key` counts as abandoned.
pub(crate) const ANSWER_MARGIN: Duration = Duration::from_secs(60);

pub(crate) fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|accept| accept.contains("text/event-stream"))
}

/// The SSE stream of a command: its output as it arrives, then its end. The stream owns the
/// command's handle, so a client that goes away (dropping the stream) kills the command. A
/// session's command (`in_session`) stores, for the repeats of its request, the execution with
/// the session it left.
pub(crate) fn stream(
    state: &AppState,
    caller: Caller,
    bounds: KeyBounds,
    prepared: PreparedShell,
    reservation: Option<Reservation>,
    in_session: bool,
) -> Sse<impl Stream<Item = Result<Event, Infallible>> + use<>> {
    let (output_tx, output) = mpsc::unbounded_channel::<OutputChunk>();
    let request_id = caller.request_id.clone();
    let running = state.commands.start(caller, prepared, Some(output_tx), bounds);
    let events = futures_util::stream::unfold(Some((output, running, 0, reservation)), move |open| {
        let request_id = request_id.clone();
        async move {
            let (mut output, running, last_seq, reservation) = open?;
            // All output first: the sender is dropped when the command has finished.
            while let Some(chunk) = output.recv().await {
                if let OutputChunk::Entry(entry) = chunk {
                    let seq = entry.seq;
                    return Some((Ok(output_event(entry)), Some((output, running, seq, reservation))));
                }
            }
            let event = match running.finished_in_session().await {
                Ok((execution, session)) => {
                    let exit = exit_event(&execution).id((last_seq + 1).to_string());
                    // A repeat of this request gets the execution as JSON.
                    let _ = match session.filter(|_| in_session) {
                        Some(session) => {
                            let answer = SessionExecution { execution, session };
                            idempotency::answer(reservation, StatusCode::OK, Ok(answer), |_| None).await
                        }
                        None => idempotency::answer(reservation, StatusCode::OK, Ok(execution), |_| None).await,
                    };
                    exit
                }
                Err(error) => {
                    if let Some(reservation) = reservation {
                        reservation.release().await;
                    }
                    error_event(ApiError::from(error), request_id)
                }
            };
            Some((Ok(event), None))
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

pub(crate) fn error_event(error: ApiError, request_id: String) -> Event {
    let body = error.to_body(Some(request_id));
    Event::default().event("error").data(serde_json::to_string(&body).unwrap_or_default())
}
