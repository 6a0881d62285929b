//! `Idempotency-Key` on the routes that start commands: the header read and checked, the
//! request reserved (see `services::idempotency`), and an answer replayed with
//! `Idempotent-Replayed: true`.

use std::time::Duration;

use axum::{
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use super::{error::ApiError, state::AppState};
use crate::{
    domain::{Caller, DomainError, IdempotencyKey, StoredReply},
    services::{Begun, KeyedRequest, Reservation},
};

pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The request's key, if it sent one; a malformed one is a 400 before anything else happens.
pub fn key_of(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(raw) = headers.get(&IDEMPOTENCY_KEY) else { return Ok(None) };
    let raw = raw.to_str().map_err(|_| DomainError::invalid("Idempotency-Key", "must be visible ASCII characters"))?;
    Ok(Some(IdempotencyKey::parse(raw)?))
}

/// What a request does next: run (holding its key's reservation, if it sent a key), or send
/// the answer its key already has.
pub enum Keyed {
    Run(Option<Reservation>),
    Replay(Response),
}

/// Reserves `key` for this request (`path` and `body`), which may take `hold` to answer.
pub async fn begin(
    state: &AppState,
    caller: &Caller,
    key: Option<IdempotencyKey>,
    path: &str,
    body: &impl Serialize,
    hold: Duration,
) -> Result<Keyed, ApiError> {
    let Some(key) = key else { return Ok(Keyed::Run(None)) };
    let body = serde_json::to_string(body).map_err(DomainError::internal)?;
    let request = KeyedRequest { owner: caller.api_key_id, key, method: "POST", path, body: &body, hold };
    Ok(match state.idempotency.begin(request).await? {
        Begun::Run(reservation) => Keyed::Run(Some(reservation)),
        Begun::Replay(reply) => Keyed::Replay(replay(reply)),
    })
}

/// Answers `status` with the JSON of what the request came to (and its `location`), stored
/// first for the repeats when the request holds a reservation; an error gives the key up.
pub async fn answer<T: Serialize>(
    reservation: Option<Reservation>,
    status: StatusCode,
    outcome: Result<T, DomainError>,
    location: impl FnOnce(&T) -> Option<String>,
) -> Result<Response, ApiError> {
    let value = match outcome {
        Ok(value) => value,
        Err(error) => {
            if let Some(reservation) = reservation {
                reservation.release().await;
            }
            return Err(error.into());
        }
    };
    let location = location(&value);
    let body = serde_json::to_string(&value).map_err(DomainError::internal)?;
    let reply = StoredReply { status: status.as_u16(), location, body };
    if let Some(reservation) = reservation {
        reservation.complete(&reply).await;
    }
    Ok(json_response(reply, false))
}

fn replay(reply: StoredReply) -> Response {
    json_response(reply, true)
}

fn json_response(reply: StoredReply, replayed: bool) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
    let mut response =
        (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], reply.body).into_response();
    if let Some(location) = reply.location.and_then(|l| HeaderValue::try_from(l).ok()) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    if replayed {
        response.headers_mut().insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    response
}
