//! A tool's call of an API route, in process. It carries what the `/mcp` request carried (the
//! key, the request id, the client's address and forwarding headers, the trace context), so
//! the route authenticates, authorizes, validates and audits it as if the client had called it;
//! and it is marked as counted, since the `/mcp` request itself was.

use axum::{
    Router,
    body::{Body, to_bytes},
    extract::ConnectInfo,
    http::{HeaderValue, Method, Request, Response, StatusCode, header, request::Parts},
};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::super::{auth::CountedAlready, error::render_error, request_id::X_REQUEST_ID};

/// Headers of the `/mcp` request that its tools' calls carry.
const FORWARDED: [&str; 6] =
    ["x-api-key", "x-request-id", "x-forwarded-for", "traceparent", "tracestate", "user-agent"];
/// The most of a JSON answer a tool reads.
pub const MAX_JSON_BYTES: usize = 16 << 20;
/// The most of a refusal's body a tool reads (an error body is small).
const MAX_ERROR_BYTES: usize = 1 << 20;

/// A refusal, as the API's error body (`{"error":{"code","message",…}}`), for a tool error.
#[derive(Debug)]
pub struct ToolError(pub Value);

impl ToolError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self(json!({"error": {"code": code, "message": message.into()}}))
    }

    pub fn invalid(field: &str, problem: &str) -> Self {
        let message = format!("invalid request: {field}: {problem}");
        Self(
            json!({"error": {"code": "VALIDATION_FAILED", "message": message, "details": {"fields": {field: problem}}}}),
        )
    }

    /// `CODE: message`, as a person reads it.
    pub fn summary(&self) -> String {
        let error = &self.0["error"];
        format!("{}: {}", error["code"].as_str().unwrap_or("ERROR"), error["message"].as_str().unwrap_or_default())
    }
}

/// The API's router and the `/mcp` request a tool call belongs to.
#[derive(Clone, Copy)]
pub struct Api<'a> {
    pub router: &'a Router,
    pub outer: &'a Parts,
}

impl Api<'_> {
    /// A request to `path_and_query` with what the `/mcp` request carried.
    pub fn request(&self, method: Method, path_and_query: &str) -> axum::http::request::Builder {
        let mut builder = Request::builder().method(method).uri(path_and_query);
        for name in FORWARDED {
            if let Some(value) = self.outer.headers.get(name) {
                builder = builder.header(name, value);
            }
        }
        if let Some(peer) = self.outer.extensions.get::<ConnectInfo<std::net::SocketAddr>>() {
            builder = builder.extension(*peer);
        }
        builder.extension(CountedAlready)
    }

    /// Answers the call as the edge would have answered it to a client: errors in the API's
    /// JSON shape, under the `/mcp` request's id.
    pub async fn send(&self, request: Request<Body>) -> Response<Body> {
        let response = match self.router.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let request_id = self.outer.headers.get(&X_REQUEST_ID).cloned().unwrap_or(HeaderValue::from_static(""));
        render_error(response, &request_id)
    }

    /// Sends a request as built; its response if the API accepted it, else the API's refusal.
    pub async fn accepted(
        &self,
        request: Result<Request<Body>, axum::http::Error>,
    ) -> Result<Response<Body>, ToolError> {
        let request = request.map_err(|error| ToolError::new("INTERNAL", error.to_string()))?;
        let response = self.send(request).await;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let bytes = read_body(response, MAX_ERROR_BYTES).await?;
        Err(refusal(status, &bytes))
    }

    /// Sends a JSON body (or none) and reads the JSON answer; a refusal is the API's error.
    pub async fn json(&self, method: Method, path_and_query: &str, body: Option<&Value>) -> Result<Value, ToolError> {
        let request = match body {
            Some(body) => self
                .request(method, path_and_query)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string())),
            None => self.request(method, path_and_query).body(Body::empty()),
        };
        let bytes = read_body(self.accepted(request).await?, MAX_JSON_BYTES).await?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|error| ToolError::new("INTERNAL", format!("the API's answer: {error}")))
    }
}

/// The body, at most `limit` bytes.
pub async fn read_body(response: Response<Body>, limit: usize) -> Result<axum::body::Bytes, ToolError> {
    to_bytes(response.into_body(), limit)
        .await
        .map_err(|_| ToolError::new("PAYLOAD_TOO_LARGE", format!("the answer is over {limit} bytes")))
}

/// The API's error from a refused call's status and body (or an `error` event's data).
pub fn refusal(status: StatusCode, body: &[u8]) -> ToolError {
    match serde_json::from_slice::<Value>(body) {
        Ok(value) if value["error"]["code"].is_string() => ToolError(value),
        _ => ToolError::new("INTERNAL", format!("HTTP {status}: {}", String::from_utf8_lossy(body))),
    }
}

/// `path?name=value&…`, the values encoded.
pub fn with_query(path: &str, pairs: &[(&str, Option<String>)]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        if let Some(value) = value {
            query.append_pair(name, value);
        }
    }
    let query = query.finish();
    if query.is_empty() { path.to_owned() } else { format!("{path}?{query}") }
}

/// A path segment (an id from a tool's arguments) safe inside a path.
pub fn segment(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
