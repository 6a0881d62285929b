//! `/api-keys`: create (the secret is in this one response only), list, get, revoke.

use axum::{Json, extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    domain::{ApiKey, ApiKeyChanges, NewApiKey, PageRequest, RotateRequest},
    http::{
        auth::{Authorized, scope},
        error::{ApiError, ErrorBody},
        extract::{ApiJson, ApiJsonOrEmpty, ApiPath, ApiQuery},
        state::AppState,
    },
};

#[derive(Serialize, ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    api_key: ApiKey,
    /// The secret: shown in this response only. Send it as `X-API-Key`.
    key: String,
}

#[derive(Serialize, ToSchema)]
pub struct ApiKeyList {
    api_keys: Vec<ApiKey>,
    next_cursor: Option<String>,
}

/// `limit` (1..=500, default 50) and `cursor` (the previous page's `next_cursor`).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
}

impl PageParams {
    pub fn page(&self) -> Result<PageRequest, ApiError> {
        Ok(PageRequest::parse(self.limit, self.cursor.as_deref())?)
    }
}

/// Create an API key
///
/// The secret is in the answer's `key`, shown this once; only its hash is stored. A caller may
/// grant only scopes it holds. Scope `keys:admin`.
#[utoipa::path(
    post, path = "/api-keys", tag = "api-keys", security(("api_key" = [])),
    request_body = NewApiKey,
    responses(
        (status = 201, description = "Created; `key` is the secret, shown this once", body = CreatedApiKey),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    )
)]
pub async fn create_api_key(
    auth: Authorized<scope::KeysAdmin>,
    State(state): State<AppState>,
    ApiJson(new): ApiJson<NewApiKey>,
) -> Result<(StatusCode, Json<CreatedApiKey>), ApiError> {
    let (api_key, secret) = state.keys.create(Some(&auth.key), new).await?;
    Ok((StatusCode::CREATED, Json(CreatedApiKey { api_key, key: secret.expose().to_owned() })))
}

/// List API keys
///
/// Newest first, never with secrets. Scope `keys:admin`.
#[utoipa::path(
    get, path = "/api-keys", tag = "api-keys", security(("api_key" = [])),
    params(PageParams),
    responses((status = 200, body = ApiKeyList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody))
)]
pub async fn list_api_keys(
    _auth: Authorized<scope::KeysAdmin>,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<ApiKeyList>, ApiError> {
    let page = state.keys.list(&params.page()?).await?;
    Ok(Json(ApiKeyList { api_keys: page.items, next_cursor: page.next_cursor }))
}

/// Get an API key
///
/// Never with its secret. Scope `keys:admin`.
#[utoipa::path(
    get, path = "/api-keys/{id}", tag = "api-keys", security(("api_key" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = ApiKey), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody))
)]
pub async fn get_api_key(
    _auth: Authorized<scope::KeysAdmin>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<ApiKey>, ApiError> {
    Ok(Json(state.keys.get(id).await?))
}

/// Change an API key
///
/// Name, scopes, allowed addresses, rate limit and expiry; only a caller holding every scope the
/// key has (or will have) may change it. Scope `keys:admin`.
#[utoipa::path(
    patch, path = "/api-keys/{id}", tag = "api-keys", security(("api_key" = [])),
    params(("id" = Uuid, Path)),
    request_body = ApiKeyChanges,
    responses(
        (status = 200, body = ApiKey),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "The key is revoked", body = ErrorBody),
    )
)]
pub async fn update_api_key(
    auth: Authorized<scope::KeysAdmin>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(changes): ApiJson<ApiKeyChanges>,
) -> Result<Json<ApiKey>, ApiError> {
    Ok(Json(state.keys.update(&auth.key, id, changes).await?))
}

/// Rotate an API key's secret
///
/// Answers `201` with the new secret; the old one keeps working for `grace_seconds` (default 0).
/// Scope `keys:admin`, and every scope of the key.
#[utoipa::path(
    post, path = "/api-keys/{id}/rotate", tag = "api-keys", security(("api_key" = [])),
    params(("id" = Uuid, Path)),
    request_body(content = Option<RotateRequest>, description = "Optional"),
    responses(
        (status = 201, description = "The new secret, shown this once; the old one works for `grace_seconds`", body = CreatedApiKey),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "The key is revoked", body = ErrorBody),
    )
)]
pub async fn rotate_api_key(
    auth: Authorized<scope::KeysAdmin>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJsonOrEmpty(request): ApiJsonOrEmpty<RotateRequest>,
) -> Result<(StatusCode, Json<CreatedApiKey>), ApiError> {
    let (api_key, secret) = state.keys.rotate(&auth.key, id, request.grace_seconds).await?;
    Ok((StatusCode::CREATED, Json(CreatedApiKey { api_key, key: secret.expose().to_owned() })))
}

/// Revoke an API key
///
/// It stops working on every replica within `CACHE_TTL`, and so does everything it started:
/// its running commands are killed, its streams and followers end with an `error` event, its
/// terminals close with an exit frame, its queued commands are cancelled. Scope `keys:admin`,
/// and every scope of the key.
#[utoipa::path(
    delete, path = "/api-keys/{id}", tag = "api-keys", security(("api_key" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 204, description = "Revoked"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody))
)]
pub async fn revoke_api_key(
    auth: Authorized<scope::KeysAdmin>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    state.keys.revoke(&auth.key, id).await?;
    // Revoked either way; should this fail, every replica's upkeep does it within seconds.
    if let Err(error) = state.queue.cancel_work_of_unusable_keys().await {
        tracing::warn!(%error, "could not cancel a revoked key's queued commands yet; the upkeep will");
    }
    Ok(StatusCode::NO_CONTENT)
}
