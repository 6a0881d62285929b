//! Authentication, rate limiting and scopes.
//!
//! The `authenticate` middleware guards every route that needs a key: it resolves `X-API-Key`
//! (401 when missing, malformed, unknown, revoked, expired or rotated out; 403 outside the key's
//! IP allowlist), counts the request against the key's shared sliding window (429 past it), puts
//! the `RateLimit-*` headers on the response, and leaves an `AuthContext` for the handler. Each
//! handler then names the scope it needs in its signature, `Authorized<scope::ProjectsRead>`,
//! which answers 403 without it.

use std::marker::PhantomData;

use axum::{
    extract::{FromRequestParts, Path, Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, header::RETRY_AFTER, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use uuid::Uuid;

use super::{error::ApiError, state::AppState};
use crate::{
    domain::{ApiKey, Caller, CommandReader, DomainError, ProjectId, Quotas, Scope, Unauthenticated},
    ports::RateDecision,
    services::{Authenticated, Credential, Deadline, KeyBounds, KeyHold},
    telemetry::metrics::RATE_LIMITED_REQUESTS_TOTAL,
};

pub const API_KEY_HEADER: &str = "x-api-key";

/// `X-API-Key` as a header name.
pub fn api_key_header() -> axum::http::HeaderName {
    axum::http::HeaderName::from_static(API_KEY_HEADER)
}
/// `API_KEY_HEADER`, parsed once (a lookup by `&str` parses the name every time).
const API_KEY: HeaderName = HeaderName::from_static(API_KEY_HEADER);
const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Who made this request, established by `authenticate`.
#[derive(Debug, Clone)]
pub struct AuthContext {
    pub key: ApiKey,
    pub caller: Caller,
    /// What the work this request starts holds (see `KeyWatch`).
    pub credential: Credential,
    pub deadline: Option<Deadline>,
}

/// Marks a request the rate limit has already counted: a tool's call of the API within one
/// `/mcp` request, which was counted itself. Only code in this process sets an extension; no
/// client can.
#[derive(Debug, Clone, Copy)]
pub struct CountedAlready;

/// Left on the response by `authenticate`, so outer layers (the audit of refusals) know the key.
#[derive(Debug, Clone, Copy)]
pub struct AuthenticatedKey(pub Uuid);

pub fn request_id(headers: &HeaderMap) -> String {
    headers.get(&super::request_id::X_REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

pub async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let client_ip = state.client_ip.of(request.extensions(), request.headers());
    let header = request.headers().get(&API_KEY).map(|v| v.to_str().unwrap_or(""));
    let key = state.keys.authenticate(header, client_ip).await;
    admit(&state, key, client_ip, request, next).await
}

/// `authenticate` for the terminal's WebSocket: `X-API-Key`, or else a `?ticket=` issued for
/// this project (browsers cannot set headers on a WebSocket). The key's allowlist and rate
/// limit apply either way.
pub async fn authenticate_terminal(
    State(state): State<AppState>,
    Path(params): Path<Vec<(String, String)>>,
    request: Request,
    next: Next,
) -> Response {
    let client_ip = state.client_ip.of(request.extensions(), request.headers());
    let header = request.headers().get(&API_KEY).map(|v| v.to_str().unwrap_or(""));
    let ticket = request.uri().query().and_then(|query| {
        url::form_urlencoded::parse(query.as_bytes()).find(|(name, _)| name == "ticket").map(|(_, value)| value)
    });
    let key = match (header, ticket) {
        (None, Some(ticket)) => {
            let project = params.iter().find(|(name, _)| name == "id").map_or("", |(_, id)| id.as_str());
            match ProjectId::parse(project) {
                Ok(project) => state.terminals.redeem(&ticket, &project, client_ip).await,
                Err(error) => Err(error),
            }
        }
        (header, _) => state.keys.authenticate(header, client_ip).await,
    };
    admit(&state, key, client_ip, request, next).await
}

/// Counts an authenticated request against its key's rate limit and runs it with an
/// `AuthContext`, or answers why not.
async fn admit(
    state: &AppState,
    key: Result<Authenticated, DomainError>,
    client_ip: Option<std::net::IpAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    let Authenticated { key, credential, deadline } = match key {
        Ok(authenticated) => authenticated,
        Err(error) => return ApiError::from(error).into_response(),
    };
    let key_id = key.id;
    let counted = if request.extensions().get::<CountedAlready>().is_some() {
        Ok(None)
    } else {
        state.rate_limits.check(&key).await
    };
    let mut response = match counted {
        Err(error) => ApiError::from(error).into_response(),
        Ok(Some(decision)) if !decision.allowed => {
            metrics::counter!(RATE_LIMITED_REQUESTS_TOTAL).increment(1);
            let mut response = ApiError::RateLimited.into_response();
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(decision.reset_secs));
            add_rate_limit_headers(&mut response, &decision);
            response
        }
        Ok(decision) => {
            let caller = Caller { api_key_id: Some(key.id), request_id: request_id(request.headers()), client_ip };
            request.extensions_mut().insert(AuthContext { key, caller, credential, deadline });
            let mut response = next.run(request).await;
            if let Some(decision) = decision {
                add_rate_limit_headers(&mut response, &decision);
            }
            response
        }
    };
    response.extensions_mut().insert(AuthenticatedKey(key_id));
    response
}

fn add_rate_limit_headers(response: &mut Response, decision: &RateDecision) {
    let headers = response.headers_mut();
    headers.insert(RATELIMIT_LIMIT, HeaderValue::from(decision.limit));
    headers.insert(RATELIMIT_REMAINING, HeaderValue::from(decision.remaining));
    headers.insert(RATELIMIT_RESET, HeaderValue::from(decision.reset_secs));
}

/// A scope a handler requires, as a type, so the requirement is visible in its signature.
pub trait RequiredScope: Send + Sync + 'static {
    const SCOPE: Scope;
}

pub mod scope {
    use super::{RequiredScope, Scope};

    macro_rules! scopes {
        ($($name:ident),*) => {$(
            pub struct $name;
            impl RequiredScope for $name {
                const SCOPE: Scope = Scope::$name;
            }
        )*};
    }

    scopes!(
        ProjectsRead,
        CommandsExecute,
        CommandsRead,
        AuditRead,
        WebhooksManage,
        KeysAdmin,
        FilesRead,
        FilesWrite,
        TerminalOpen
    );
}

/// The authenticated caller, proven to hold scope `S`.
pub struct Authorized<S> {
    pub key: ApiKey,
    pub caller: Caller,
    credential: Credential,
    deadline: Option<Deadline>,
    _scope: PhantomData<S>,
}

impl<S> Authorized<S> {
    /// What work this request starts holds: it ends when the key may no longer act.
    pub fn hold(&self, state: &AppState) -> KeyHold {
        state.keys.hold(&self.credential, self.deadline)
    }

    /// What a command this request runs now holds of its key: a hold, and a seat in the key's
    /// `commands` quota (429 when it is full).
    pub fn bounds(&self, state: &AppState) -> Result<KeyBounds, DomainError> {
        let seat = state.commands.admit(&self.caller, self.quotas(state))?;
        Ok(KeyBounds { hold: self.hold(state), seat })
    }

    /// The quotas this key works under: its own, else the server's.
    pub fn quotas(&self, state: &AppState) -> Quotas {
        state.quotas.for_key(&self.key.quotas)
    }

    /// Which commands this key reads: every one for `admin`, else all but other keys' session
    /// commands.
    pub fn command_reader(&self) -> CommandReader {
        if self.key.allows(Scope::Admin) { CommandReader::Admin } else { CommandReader::Key(self.key.id) }
    }
}

impl<S: RequiredScope, St: Send + Sync> FromRequestParts<St> for Authorized<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &St) -> Result<Self, ApiError> {
        // Only reachable without a context if a route forgot the middleware: fail closed. Taken,
        // not cloned: a handler has one `Authorized`, and nothing after it reads the context.
        let AuthContext { key, caller, credential, deadline } =
            parts.extensions.remove::<AuthContext>().ok_or(ApiError::from(Unauthenticated::Missing))?;
        key.require(S::SCOPE)?;
        Ok(Self { key, caller, credential, deadline, _scope: PhantomData })
    }
}
