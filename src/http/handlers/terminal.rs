//! Terminals: `POST /projects/{id}/terminal/tickets` (a single-use ticket, for browsers) and
//! `GET /projects/{id}/terminal` (the WebSocket). Binary frames carry terminal bytes both ways;
//! the client's text frames are resizes; the server ends with `{"type":"exit","exit_code"}` and
//! a close. A text frame that is not a resize is answered with an `error` frame (the API's
//! error body) and changes nothing.
//!
//! The shell is started before the upgrade, so a missing project or an unavailable executor is
//! an ordinary JSON error; it is killed if the upgrade never completes.

use std::{sync::Arc, time::Duration};

use axum::{
    Json,
    extract::{
        State, WebSocketUpgrade,
        ws::{CloseFrame, Message, WebSocket, close_code},
    },
    http::StatusCode,
    response::Response,
};
use serde::Deserialize;
use tokio::time::Instant;
use utoipa::IntoParams;

use crate::{
    domain::{
        ControlFrame, DomainError, IssuedTicket, ProjectId, TerminalEnding, TerminalInput, TerminalSize,
        TerminalSummary,
    },
    http::{
        auth::{Authorized, scope},
        error::{ApiError, ErrorBody},
        extract::{ApiPath, ApiQuery},
        state::AppState,
    },
    ports::TerminalIo,
    services::{KeyHold, OpenedTerminal, TerminalService},
    telemetry::metrics::{TERMINAL_BYTES_TOTAL, TERMINAL_SESSIONS_ACTIVE},
};

/// Largest WebSocket message a client may send (a paste, a resize).
const MAX_CLIENT_MESSAGE_BYTES: usize = 1 << 20;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TerminalParams {
    /// Columns, 1 to 1000 (default 80).
    cols: Option<u32>,
    /// Rows, 1 to 1000 (default 24).
    rows: Option<u32>,
    /// A ticket from `POST /projects/{id}/terminal/tickets`, instead of `X-API-Key`.
    #[allow(dead_code)]
    ticket: Option<String>,
}

/// Get a terminal ticket
///
/// A single-use ticket that opens `GET /projects/{id}/terminal` within 30 s for this key and
/// this project only, for clients that cannot set `X-API-Key` on a WebSocket (browsers).
/// Scope `terminal:open`.
#[utoipa::path(
    post, path = "/projects/{id}/terminal/tickets", tag = "terminal", security(("api_key" = [])),
    params(("id" = String, Path, description = "Project id", pattern = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")),
    responses(
        (status = 201, body = IssuedTicket),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "No such project", body = ErrorBody), (status = 429, body = ErrorBody),
    )
)]
pub async fn create_ticket(
    auth: Authorized<scope::TerminalOpen>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<IssuedTicket>), ApiError> {
    let id = ProjectId::parse(&id)?;
    Ok((StatusCode::CREATED, Json(state.terminals.issue_ticket(&auth.key, &id).await?)))
}

/// Open a terminal
///
/// Upgrades to a WebSocket running an interactive shell in the project on a pseudo-terminal
/// (`TERM=xterm-256color`). Authenticated by `X-API-Key` or `?ticket=`. Binary frames are
/// terminal bytes both ways; text frames from the client are `{"type":"resize","cols","rows"}`;
/// the server ends with `{"type":"exit","exit_code"}` and a close. Closing the socket kills the
/// shell and everything it started. Scope `terminal:open`.
#[utoipa::path(
    get, path = "/projects/{id}/terminal", tag = "terminal", security(("api_key" = []), ()),
    params(("id" = String, Path, description = "Project id", pattern = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$"), TerminalParams),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket upgrade, or a bad size", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "No such project", body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, description = "The executor is unavailable", body = ErrorBody),
    )
)]
pub async fn open_terminal(
    auth: Authorized<scope::TerminalOpen>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<TerminalParams>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let id = ProjectId::parse(&id)?;
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::from(DomainError::invalid("upgrade", format!("this route is a WebSocket: {rejection}")))
    })?;
    let size = TerminalSize::new(params.cols.unwrap_or(80), params.rows.unwrap_or(24))?;
    let hold = auth.hold(&state);
    let opened = state.terminals.open(&auth.caller, &id, size, auth.quotas(&state)).await?;
    let service = state.terminals.clone();
    Ok(upgrade
        .max_message_size(MAX_CLIENT_MESSAGE_BYTES)
        .max_frame_size(MAX_CLIENT_MESSAGE_BYTES)
        .on_upgrade(move |socket| serve(socket, opened, service, hold)))
}

/// Counts a terminal in `terminal_sessions_active` while it lives.
struct Active;

impl Active {
    fn new() -> Self {
        metrics::gauge!(TERMINAL_SESSIONS_ACTIVE).increment(1.0);
        Self
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        metrics::gauge!(TERMINAL_SESSIONS_ACTIVE).decrement(1.0);
    }
}

/// Moves bytes between the socket and the terminal until either ends (or the key may no longer
/// act, or the terminal has lived its lifetime), then tells the client how it ended and audits
/// it.
async fn serve(mut socket: WebSocket, opened: OpenedTerminal, service: Arc<TerminalService>, hold: KeyHold) {
    let _active = Active::new();
    let started = Instant::now();
    let OpenedTerminal { io, caller, project_id, seat } = opened;
    let mut pump = Pump {
        io,
        bytes_in: 0,
        bytes_out: 0,
        idle: service.limits.idle_timeout,
        ends_at: started + service.limits.max_lifetime,
        hold,
    };
    let ending = pump.run(&mut socket).await;
    let Pump { io, bytes_in, bytes_out, .. } = pump;
    // Whatever still runs is killed here, and the end is on record, before the client is told;
    // so is the terminal's place in its key's quota, for the next one it opens.
    drop(io);
    drop(seat);
    let summary = TerminalSummary { ending, duration: started.elapsed(), bytes_in, bytes_out };
    metrics::counter!(TERMINAL_BYTES_TOTAL, "direction" => "in").increment(bytes_in);
    metrics::counter!(TERMINAL_BYTES_TOTAL, "direction" => "out").increment(bytes_out);
    service.record_end(&caller, &project_id, &summary).await;
    // A client that reads nothing gets no goodbye: it costs a timer, not a task forever.
    let _ = tokio::time::timeout(GOODBYE_WAIT, say_goodbye(&mut socket, ending)).await;
}

/// How long the last frames may take to leave.
const GOODBYE_WAIT: Duration = Duration::from_secs(5);

struct Pump {
    io: TerminalIo,
    bytes_in: u64,
    bytes_out: u64,
    idle: Duration,
    /// `RDEV_TERMINAL_MAX_LIFETIME` after it opened, whatever goes through it.
    ends_at: Instant,
    hold: KeyHold,
}

impl Pump {
    async fn run(&mut self, socket: &mut WebSocket) -> TerminalEnding {
        let mut deadline = Instant::now() + self.idle;
        // Input the shell has no room for yet: the socket is not read until it is taken, while
        // output keeps flowing (a shell blocked on output would never make room otherwise).
        let mut pending: Option<TerminalInput> = None;
        loop {
            tokio::select! {
                chunk = self.io.output.recv() => {
                    // The shell is done and its output all sent.
                    let Some(chunk) = chunk else { break };
                    self.bytes_out += chunk.len() as u64;
                    // Output counts once the client takes it: a client that stops reading is
                    // idle too, and its send gives up at the deadline.
                    match tokio::time::timeout_at(deadline, socket.send(Message::Binary(chunk))).await {
                        Err(_) => return TerminalEnding::Idle,
                        Ok(Err(_)) => return TerminalEnding::ClientClosed,
                        Ok(Ok(())) => deadline = Instant::now() + self.idle,
                    }
                }
                permit = self.io.input.reserve(), if pending.is_some() => {
                    // An error: the shell is ending, and its exit comes on the output side.
                    if let (Ok(permit), Some(input)) = (permit, pending.take()) {
                        permit.send(input);
                    }
                }
                message = socket.recv(), if pending.is_none() => {
                    let message = match message {
                        Some(Ok(message)) => message,
                        Some(Err(_)) | None => return TerminalEnding::ClientClosed,
                    };
                    deadline = Instant::now() + self.idle;
                    match message {
                        Message::Binary(keys) => {
                            self.bytes_in += keys.len() as u64;
                            pending = Some(TerminalInput::Keys(keys));
                        }
                        Message::Text(text) => match ControlFrame::parse(text.as_str()) {
                            Ok(input) => pending = Some(input),
                            Err(error) => match tokio::time::timeout_at(deadline, socket.send(error_frame(error))).await {
                                Err(_) => return TerminalEnding::Idle,
                                Ok(Err(_)) => return TerminalEnding::ClientClosed,
                                Ok(Ok(())) => {}
                            },
                        },
                        Message::Close(_) => return TerminalEnding::ClientClosed,
                        Message::Ping(_) | Message::Pong(_) => {}
                    }
                }
                () = tokio::time::sleep_until(deadline) => return TerminalEnding::Idle,
                () = tokio::time::sleep_until(self.ends_at) => return TerminalEnding::Lifetime,
                why = self.hold.ended() => return TerminalEnding::KeyEnded(why),
            }
        }
        self.exit().await
    }

    async fn exit(&mut self) -> TerminalEnding {
        match (&mut self.io.exit).await {
            Ok(Ok(code)) => TerminalEnding::Exited(code),
            Ok(Err(error)) => {
                tracing::warn!(%error, "a terminal's shell ended without a status");
                TerminalEnding::Failed
            }
            Err(_) => TerminalEnding::Failed,
        }
    }
}

/// An `error` text frame: the API's error body under `error`.
fn error_frame(error: DomainError) -> Message {
    let body = ApiError::from(error).to_body(None);
    let frame = serde_json::json!({ "type": "error", "error": body.error });
    Message::Text(frame.to_string().into())
}

/// The last frames: the exit status and a normal close, or a close saying why it ended. A
/// terminal the server ended gets an exit frame without a code, saying why.
async fn say_goodbye(socket: &mut WebSocket, ending: TerminalEnding) {
    let close = |code, reason: &'static str| Message::Close(Some(CloseFrame { code, reason: reason.into() }));
    let exit = |code: Option<i32>, reason: Option<String>| {
        let mut exit = serde_json::json!({ "type": "exit", "exit_code": code });
        if let Some(reason) = reason {
            exit["reason"] = reason.into();
        }
        Message::Text(exit.to_string().into())
    };
    let (frame, last) = match ending {
        TerminalEnding::Exited(code) => (exit(Some(code), None), close(close_code::NORMAL, "")),
        TerminalEnding::KeyEnded(why) => {
            (exit(None, Some(why.to_string())), close(close_code::POLICY, "API key may no longer act"))
        }
        TerminalEnding::Lifetime => {
            (exit(None, Some("maximum lifetime reached".into())), close(close_code::NORMAL, "maximum lifetime"))
        }
        TerminalEnding::Idle => return send_close(socket, close(close_code::NORMAL, "idle timeout")).await,
        TerminalEnding::Failed => return send_close(socket, close(close_code::ERROR, "the executor failed")).await,
        TerminalEnding::ClientClosed => return,
    };
    if socket.send(frame).await.is_ok() {
        send_close(socket, last).await;
    }
}

async fn send_close(socket: &mut WebSocket, close: Message) {
    let _ = socket.send(close).await;
}
