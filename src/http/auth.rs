//! Authentication and scopes.
//!
//! The `authenticate` middleware guards every route that needs a key: it resolves `X-API-Key`
//! (401 when missing, malformed, unknown, revoked or expired; 403 outside the key's IP
//! allowlist) and leaves an `AuthContext` for the handler. Each handler then names the scope it
//! needs in its signature, `Authorized<scope::ProjectsRead>`, which answers 403 without it.

use std::{marker::PhantomData, net::SocketAddr};

use axum::{
    extract::{ConnectInfo, FromRequestParts, Request, State},
    http::request::Parts,
    middleware::Next,
    response::Response,
};

use super::{error::ApiError, state::AppState};
use crate::domain::{ApiKey, Caller, Scope, Unauthenticated};

pub const API_KEY_HEADER: &str = "x-api-key";

/// Who made this request, established by `authenticate`.
#[derive(Debug, Clone)]
pub struct AuthContext {
    pub key: ApiKey,
    pub caller: Caller,
}

pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let client_ip = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip());
    let header = request.headers().get(API_KEY_HEADER).map(|v| v.to_str().unwrap_or(""));
    let key = state.keys.authenticate(header, client_ip).await?;
    let request_id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let caller = Caller { api_key_id: Some(key.id), request_id, client_ip };
    request.extensions_mut().insert(AuthContext { key, caller });
    Ok(next.run(request).await)
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

    scopes!(ProjectsRead, CommandsExecute, CommandsRead, AuditRead, WebhooksManage, KeysAdmin);
}

/// The authenticated caller, proven to hold scope `S`.
pub struct Authorized<S> {
    pub key: ApiKey,
    pub caller: Caller,
    _scope: PhantomData<S>,
}

impl<S: RequiredScope, St: Send + Sync> FromRequestParts<St> for Authorized<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &St) -> Result<Self, ApiError> {
        // Only reachable without a context if a route forgot the middleware: fail closed.
        let AuthContext { key, caller } =
            parts.extensions.get::<AuthContext>().cloned().ok_or(ApiError::from(Unauthenticated::Missing))?;
        key.require(S::SCOPE)?;
        Ok(Self { key, caller, _scope: PhantomData })
    }
}
