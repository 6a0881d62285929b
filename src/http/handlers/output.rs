//! A command's stored output: `GET /commands/{id}/output` (the kept bytes of one stream) and
//! `GET /commands/{id}/events` (its log as Server-Sent Events, live while it runs, resumable
//! with `Last-Event-ID`), from any replica.

use std::{convert::Infallible, pin::Pin, time::Duration};

use axum::{
    extract::State,
    http::{HeaderMap, HeaderValue, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures_util::{Stream, StreamExt as _};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    domain::{DomainError, EntryKind, OutputEntry, Stream as OutputStream, Unauthenticated},
    http::{
        auth::{Authorized, scope},
        error::{ApiError, ErrorBody},
        extract::{ApiPath, ApiQuery},
        state::AppState,
    },
    services::{Followed, FollowedBy, KeyHold},
};

/// One Server-Sent Event as it goes out (its `id:`, `event:` and `data:` lines): what the
/// document says a `text/event-stream` answer is made of. Only described, never built.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SseEvent {
    /// Strictly increasing; send the last one back as `Last-Event-ID` to resume.
    id: Option<String>,
    /// `stdout`, `stderr`, `gap`, `exit` (or `error`).
    event: String,
    data: String,
}

/// Comments sent on an idle stream, so proxies do not cut it.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OutputParams {
    /// `stdout` (default) or `stderr`.
    stream: Option<String>,
}

/// Get a command's output
///
/// The kept bytes of one stream, raw: the head, then (once it ended) the tail. Readable while
/// the command runs, from any replica. `Rdev-Output-Complete` says whether more may come,
/// `Rdev-Output-Omitted-Bytes` how many were dropped from the middle. Scope `commands:read`.
#[utoipa::path(
    get, path = "/commands/{id}/output", tag = "commands", security(("api_key" = [])),
    params(("id" = Uuid, Path), OutputParams),
    responses(
        (status = 200, description = "The kept bytes", content_type = "application/octet-stream", body = Vec<u8>,
            headers(("Rdev-Output-Complete" = String, description = "`true` once the command ended"),
                    ("Rdev-Output-Omitted-Bytes" = u64, description = "Bytes dropped from the middle"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn get_output(
    auth: Authorized<scope::CommandsRead>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(params): ApiQuery<OutputParams>,
) -> Result<Response, ApiError> {
    let stream = match params.stream.as_deref() {
        None => OutputStream::Stdout,
        Some(raw) => {
            OutputStream::parse(raw).ok_or_else(|| DomainError::invalid("stream", "must be stdout or stderr"))?
        }
    };
    let kept = state.output.kept(id, stream, auth.command_reader()).await?;
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream")),
        (
            header::HeaderName::from_static("rdev-output-complete"),
            HeaderValue::from_static(if kept.complete { "true" } else { "false" }),
        ),
        (header::HeaderName::from_static("rdev-output-omitted-bytes"), HeaderValue::from(kept.omitted_bytes)),
    ];
    Ok((headers, kept.bytes).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Resume after this event id (as `Last-Event-ID` does; the header wins).
    after: Option<u64>,
}

/// Follow a command's output
///
/// Server-Sent Events from any replica: `stdout`/`stderr` (the chunk), `gap` (`{"stream",
/// "offset","bytes"}` where output was dropped), then `exit` (the Command without output). Live
/// while the command runs, a replay once it ended. Every event has an `id:`, strictly
/// increasing; `Last-Event-ID` (or `?after=`) resumes after it with no duplicate and no hole.
/// Disconnecting does not stop the command. Scope `commands:read`.
#[utoipa::path(
    get, path = "/commands/{id}/events", tag = "commands", security(("api_key" = [])),
    params(
        ("id" = Uuid, Path), EventParams,
        ("Last-Event-ID" = Option<u64>, Header, description = "The id of the last event received"),
    ),
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream", body = SseEvent),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 429, description = "Too many followers of this key, or on this server", body = ErrorBody),
    )
)]
pub async fn follow_output(
    auth: Authorized<scope::CommandsRead>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(params): ApiQuery<EventParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let after = match headers.get("last-event-id") {
        Some(raw) => raw
            .to_str()
            .ok()
            .and_then(|raw| raw.trim().parse::<u64>().ok())
            .ok_or_else(|| DomainError::invalid("Last-Event-ID", "must be an event id this stream sent"))?,
        None => params.after.unwrap_or(0),
    };
    let followed = state
        .output
        .follow(
            FollowedBy { key: Some(auth.key.id), reader: auth.command_reader(), quota: auth.quotas(&state).followers },
            id,
            after,
        )
        .await?;
    let events = followed.map(|next| {
        Ok::<_, Infallible>(match next {
            Ok(Followed::Entry(entry)) => output_event(entry),
            Ok(Followed::Exit { command, id }) => exit_event(&command).id(id.to_string()),
            Err(error) => super::shell::error_event(ApiError::from(error), String::new()),
        })
    });
    let events = until_key_ends(events, auth.hold(&state), auth.caller.request_id);
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response())
}

/// `events`, cut short when `hold` ends (the key was revoked, expired or rotated out): the last
/// event is then an `error` event saying why.
pub(crate) fn until_key_ends(
    events: impl Stream<Item = Result<Event, Infallible>> + Send + 'static,
    hold: KeyHold,
    request_id: String,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let ended: Pin<Box<dyn Future<Output = Unauthenticated> + Send>> = Box::pin(async move { hold.ended().await });
    let state = Some((Box::pin(events), ended));
    futures_util::stream::unfold(state, move |state| {
        let request_id = request_id.clone();
        async move {
            let (mut events, mut ended) = state?;
            tokio::select! {
                biased;
                why = &mut ended => Some((Ok(super::shell::error_event(ApiError::from(why), request_id)), None)),
                next = events.next() => next.map(|event| (event, Some((events, ended)))),
            }
        }
    })
}

/// An entry of the output log as an event: `stdout`/`stderr` with its text, or `gap` saying
/// what was dropped; its id is the entry's `seq`.
pub(crate) fn output_event(entry: OutputEntry) -> Event {
    let event = Event::default().id(entry.seq.to_string());
    match entry.kind {
        EntryKind::Data(bytes) => event.event(entry.stream.as_str()).data(String::from_utf8_lossy(&bytes)),
        EntryKind::Gap { bytes } => {
            let gap = serde_json::json!({"stream": entry.stream, "offset": entry.offset, "bytes": bytes});
            event.event("gap").data(gap.to_string())
        }
    }
}

/// The `exit` event: the `Command` (or a run's `Execution`) without the output the stream
/// already carried.
pub(crate) fn exit_event(ended: &impl serde::Serialize) -> Event {
    let mut summary = serde_json::to_value(ended).unwrap_or_default();
    if let Some(fields) = summary.as_object_mut() {
        fields.remove("stdout");
        fields.remove("stderr");
    }
    Event::default().event("exit").data(summary.to_string())
}
