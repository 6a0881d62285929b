//! Every failure becomes one JSON shape, here and nowhere else:
//! `{"error":{"code","message","request_id","details"?}}`.
//!
//! Handlers return `ApiError`; its `IntoResponse` sets the status and attaches an `ErrorInfo`.
//! `render_error`, called by the edge layer (which knows the request id), writes the body, and
//! also turns responses that never passed through `ApiError` (axum's unknown route and wrong
//! method, the body limit, a caught panic) into the same shape.

use axum::{
    body::Body,
    extract::rejection::{JsonRejection, PathRejection, QueryRejection},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::server::is_stalled_body;
use crate::domain::{DomainError, FieldErrors, Unauthenticated};

/// When a client should try again after a 503 of a database that is down: the server learns
/// of its return within a second.
const DATABASE_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);
/// After a 503 of an executor that failed without saying when it may work again.
const EXECUTOR_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// Malformed JSON, wrong content type.
    #[error("{0}")]
    BadRequest(String),
    /// The body is over this route's limit, in bytes.
    #[error("request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// The key's rate limit is used up; the caller adds `Retry-After`.
    #[error("rate limit exceeded for this API key")]
    RateLimited,
}

impl From<Unauthenticated> for ApiError {
    fn from(reason: Unauthenticated) -> Self {
        Self::Domain(DomainError::Unauthenticated(reason))
    }
}

/// What `render_error` needs to write the body; travels in the response extensions.
#[derive(Debug, Clone)]
struct ErrorInfo {
    code: &'static str,
    message: String,
    details: Option<Value>,
}

/// The error body, for the OpenAPI document.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// One of the codes in API.md, e.g. `NOT_FOUND`, `VALIDATION_FAILED`.
    pub code: String,
    pub message: String,
    pub request_id: Option<String>,
    /// For `VALIDATION_FAILED`: `{"fields": {"<field>": "<what is wrong>"}}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Domain(error) => match error {
                DomainError::NotFound { .. } => (StatusCode::NOT_FOUND, "NOT_FOUND"),
                DomainError::Validation(_) => (StatusCode::BAD_REQUEST, "VALIDATION_FAILED"),
                DomainError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
                DomainError::Forbidden(_) => (StatusCode::FORBIDDEN, "FORBIDDEN"),
                DomainError::Conflict(_) => (StatusCode::CONFLICT, "CONFLICT"),
                DomainError::PreconditionFailed(_) => (StatusCode::PRECONDITION_FAILED, "PRECONDITION_FAILED"),
                DomainError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
                DomainError::TooBusy(_) => (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED"),
                DomainError::QuotaExceeded { .. } => (StatusCode::TOO_MANY_REQUESTS, "QUOTA_EXCEEDED"),
                DomainError::BodyStalled => (StatusCode::REQUEST_TIMEOUT, "REQUEST_TIMEOUT"),
                DomainError::IdempotencyKeyReused => (StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED"),
                DomainError::ExecutorUnavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "EXECUTOR_UNAVAILABLE"),
                DomainError::Unavailable(_) | DomainError::NotRecorded(_) => {
                    (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE")
                }
                DomainError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
            },
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "BAD_REQUEST"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
            ApiError::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED"),
        }
    }
}

impl ApiError {
    /// Status, code, message and details; server errors are logged here, with their cause.
    fn info(&self) -> (StatusCode, ErrorInfo) {
        let (status, code) = self.status_and_code();
        let details = match self {
            ApiError::Domain(DomainError::Validation(FieldErrors(fields))) => Some(json!({ "fields": fields })),
            ApiError::Domain(DomainError::NotRecorded(execution)) => Some(json!({ "execution": execution })),
            ApiError::Domain(DomainError::QuotaExceeded { quota, max, .. }) => {
                Some(json!({ "limit": quota.name(), "max": max }))
            }
            _ => None,
        };
        let message = match self {
            // Internals go to the log, never to the client.
            ApiError::Domain(DomainError::Internal(cause)) => {
                tracing::error!(error = format!("{cause:#}"), "request failed");
                "internal error".to_owned()
            }
            ApiError::Domain(DomainError::Unavailable(cause)) => {
                tracing::warn!(error = %cause, "database unavailable");
                "the database is unavailable; try again shortly".to_owned()
            }
            ApiError::Domain(DomainError::NotRecorded(_)) => "the command ran, but the database became unavailable \
                before it was recorded: its audit entry is written when the database is back, and its result is in \
                details.execution; do not run it again to learn it"
                .to_owned(),
            other => other.to_string(),
        };
        (status, ErrorInfo { code, message, details })
    }

    /// The JSON body alone, for an error that cannot be a response of its own (one that happens
    /// after a stream has started).
    pub fn to_body(&self, request_id: Option<String>) -> ErrorBody {
        let (_, info) = self.info();
        ErrorBody {
            error: ErrorDetail { code: info.code.to_owned(), message: info.message, request_id, details: info.details },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, info) = self.info();
        let mut response = status.into_response();
        let retry_after = match &self {
            ApiError::Domain(DomainError::ExecutorUnavailable { retry_after, .. }) => {
                Some(retry_after.unwrap_or(EXECUTOR_RETRY_AFTER))
            }
            ApiError::Domain(DomainError::Unavailable(_) | DomainError::NotRecorded(_)) => Some(DATABASE_RETRY_AFTER),
            ApiError::Domain(DomainError::TooBusy(_)) => Some(std::time::Duration::from_secs(1)),
            _ => None,
        };
        if let Some(after) = retry_after {
            let seconds = after.as_secs_f64().ceil().max(1.0) as u64;
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response.extensions_mut().insert(info);
        response
    }
}

impl ApiError {
    /// A JSON body's rejection; `body_limit` is the route's, for a 413 to name.
    pub fn of_json(rejection: JsonRejection, body_limit: usize) -> Self {
        match rejection {
            JsonRejection::JsonDataError(error) => field_error(&error.body_text(), "body"),
            JsonRejection::JsonSyntaxError(error) => {
                ApiError::BadRequest(format!("malformed JSON: {}", serde_message(&error.body_text())))
            }
            JsonRejection::MissingJsonContentType(_) => {
                ApiError::BadRequest("expected a JSON body with Content-Type: application/json".into())
            }
            other if is_stalled_body(&other) => ApiError::Domain(DomainError::BodyStalled),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(body_limit),
            other => ApiError::BadRequest(other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        field_error(&rejection.body_text(), "query")
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::Domain(DomainError::invalid("id", serde_message(&rejection.body_text())))
    }
}

/// axum prefixes serde's message with its own sentence; keep serde's part.
fn serde_message(text: &str) -> String {
    text.split_once(": ").map_or(text, |(_, rest)| rest).to_owned()
}

/// A serde message as a field error: `missing field `x``, `unknown field `x``, or `x: …` (whose
/// prefix is then dropped, as the field already names it). `fallback` when no field is named.
fn field_error(text: &str, fallback: &str) -> ApiError {
    let message = serde_message(text);
    match split_field(&message) {
        Some((field, text)) => ApiError::Domain(DomainError::invalid(field, text)),
        None => ApiError::Domain(DomainError::invalid(fallback, message)),
    }
}

fn split_field(message: &str) -> Option<(&str, String)> {
    // serde's position ("at line 1 column 30") says nothing a client can act on.
    let message = message.rsplit_once(" at line ").map_or(message, |(text, _)| text);
    if let Some((_, rest)) = message.split_once("missing field `") {
        return rest.split('`').next().map(|field| (field, "is required".to_owned()));
    }
    if let Some((_, rest)) = message.split_once("unknown field `") {
        let (field, expected) = rest.split_once('`')?;
        let expected = expected.trim_start_matches(',').trim();
        let text = if expected.is_empty() { "unknown field".to_owned() } else { format!("unknown field, {expected}") };
        return Some((field, text));
    }
    let (path, rest) = message.split_once(": ")?;
    let field = path.split(['.', '[']).next()?;
    let plain = !field.is_empty() && field.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    plain.then(|| (field, rest.to_owned()))
}

/// What a refused request was told, `CODE: message`, for its audit entry: the `ApiError` it
/// carries, or what its status implies (axum's own refusals carry none).
pub fn refusal_reason(response: &Response) -> String {
    let info = response.extensions().get::<ErrorInfo>().cloned().unwrap_or_else(|| info_for_status(response.status()));
    format!("{}: {}", info.code, info.message)
}

/// `response` in the API's error shape if it is an error (4xx or 5xx), as it is otherwise:
/// an `ApiError`'s `ErrorInfo` becomes the body, a JSON error body of a handler's own stays,
/// anything else (axum's unknown route, the body limit, a caught panic) gets the body its
/// status implies. `request_id` is the request's, for the body.
pub fn render_error(response: Response, request_id: &HeaderValue) -> Response {
    let status = response.status();
    if !status.is_client_error() && !status.is_server_error() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // Every 503 says when to come back, whoever produced it.
    if status == StatusCode::SERVICE_UNAVAILABLE && !parts.headers.contains_key(header::RETRY_AFTER) {
        parts.headers.insert(header::RETRY_AFTER, HeaderValue::from(DATABASE_RETRY_AFTER.as_secs()));
    }
    let info = match parts.extensions.remove::<ErrorInfo>() {
        Some(info) => info,
        None if is_json(&parts.headers) => return Response::from_parts(parts, body),
        None => info_for_status(status),
    };
    let body = ErrorBody {
        error: ErrorDetail {
            code: info.code.to_owned(),
            message: info.message,
            request_id: request_id.to_str().ok().map(str::to_owned),
            details: info.details,
        },
    };
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);

    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    Response::from_parts(parts, Body::from(bytes))
}

fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"))
}

/// For error responses produced outside our handlers.
fn info_for_status(status: StatusCode) -> ErrorInfo {
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("NOT_FOUND", "no such route"),
        StatusCode::METHOD_NOT_ALLOWED => ("METHOD_NOT_ALLOWED", "method not allowed on this route"),
        StatusCode::PAYLOAD_TOO_LARGE => ("PAYLOAD_TOO_LARGE", "request body is larger than the limit"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("BAD_REQUEST", "unsupported content type"),
        StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => ("TIMEOUT", "the request ran out of time"),
        StatusCode::SERVICE_UNAVAILABLE => ("UNAVAILABLE", "service unavailable"),
        s if s.is_server_error() => ("INTERNAL", "internal error"),
        _ => ("BAD_REQUEST", "bad request"),
    };
    ErrorInfo { code, message: message.to_owned(), details: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_field_in_serde_messages() {
        let field = |message: &str| split_field(message).map(|(field, text)| (field.to_owned(), text));
        assert_eq!(field("missing field `command` at line 1 column 2"), Some(("command".into(), "is required".into())));
        assert_eq!(
            field("timeout: unknown field `timeout`, expected one of `command`, `timeout_secs` at line 1 column 30"),
            Some(("timeout".into(), "unknown field, expected one of `command`, `timeout_secs`".into()))
        );
        assert_eq!(
            field("timeout_secs: invalid type: string, expected u64 at line 1 column 9"),
            Some(("timeout_secs".into(), "invalid type: string, expected u64".into()))
        );
        assert_eq!(field("env.FOO: invalid type").map(|f| f.0), Some("env".into()));
        assert_eq!(field("invalid type: integer"), None);
    }
}
