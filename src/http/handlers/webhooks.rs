//! `/webhooks`: subscriptions (the signing secret is in the creation response only), their
//! deliveries with every attempt, and redelivery by hand.

use axum::{Json, extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::keys::PageParams;
use crate::{
    domain::{Delivery, DeliveryFilter, DeliveryStatus, NewWebhook, PageRequest, Webhook, WebhookChanges},
    http::{
        auth::{Authorized, scope},
        error::{ApiError, ErrorBody},
        extract::{ApiJson, ApiPath, ApiQuery},
        state::AppState,
    },
};

#[derive(Serialize, ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    webhook: Webhook,
    /// The signing secret (`whsec_…`): shown in this response only. Verify deliveries with it.
    secret: String,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookList {
    webhooks: Vec<Webhook>,
    next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryList {
    deliveries: Vec<Delivery>,
    next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryParams {
    /// pending, succeeded or failed.
    status: Option<DeliveryStatus>,
    /// Items per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
}

/// Create a webhook
///
/// Subscribes a URL to command events; the signing secret (`whsec_…`) is in the answer, shown this
/// once. Scope `webhooks:manage`.
#[utoipa::path(
    post, path = "/webhooks", tag = "webhooks", security(("api_key" = [])),
    request_body = NewWebhook,
    responses(
        (status = 201, description = "Created; `secret` is shown this once", body = CreatedWebhook),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    )
)]
pub async fn create_webhook(
    _auth: Authorized<scope::WebhooksManage>,
    State(state): State<AppState>,
    ApiJson(new): ApiJson<NewWebhook>,
) -> Result<(StatusCode, Json<CreatedWebhook>), ApiError> {
    let (webhook, secret) = state.webhooks.create(new).await?;
    Ok((StatusCode::CREATED, Json(CreatedWebhook { webhook, secret: secret.expose().to_owned() })))
}

/// List webhooks
///
/// Oldest first, without secrets. Scope `webhooks:manage`.
#[utoipa::path(
    get, path = "/webhooks", tag = "webhooks", security(("api_key" = [])),
    params(PageParams),
    responses((status = 200, body = WebhookList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody))
)]
pub async fn list_webhooks(
    _auth: Authorized<scope::WebhooksManage>,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<WebhookList>, ApiError> {
    let page = state.webhooks.list(&params.page()?).await?;
    Ok(Json(WebhookList { webhooks: page.items, next_cursor: page.next_cursor }))
}

/// Get a webhook
///
/// Without its secret. Scope `webhooks:manage`.
#[utoipa::path(
    get, path = "/webhooks/{id}", tag = "webhooks", security(("api_key" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Webhook), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody))
)]
pub async fn get_webhook(
    _auth: Authorized<scope::WebhooksManage>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Webhook>, ApiError> {
    Ok(Json(state.webhooks.get(id).await?))
}

/// Change a webhook
///
/// URL, description, events and whether it is enabled; a disabled webhook's pending deliveries
/// wait. Scope `webhooks:manage`.
#[utoipa::path(
    patch, path = "/webhooks/{id}", tag = "webhooks", security(("api_key" = [])),
    params(("id" = Uuid, Path)),
    request_body = WebhookChanges,
    responses((status = 200, body = Webhook), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody))
)]
pub async fn update_webhook(
    _auth: Authorized<scope::WebhooksManage>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(changes): ApiJson<WebhookChanges>,
) -> Result<Json<Webhook>, ApiError> {
    Ok(Json(state.webhooks.update(id, changes).await?))
}

/// Delete a webhook
///
/// With its deliveries. Scope `webhooks:manage`.
#[utoipa::path(
    delete, path = "/webhooks/{id}", tag = "webhooks", security(("api_key" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 204, description = "Deleted, with its deliveries"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody))
)]
pub async fn delete_webhook(
    _auth: Authorized<scope::WebhooksManage>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    state.webhooks.delete(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List a webhook's deliveries
///
/// Newest first, each with every attempt (status code, latency, error) and the next retry. Scope
/// `webhooks:manage`.
#[utoipa::path(
    get, path = "/webhooks/{id}/deliveries", tag = "webhooks", security(("api_key" = [])),
    params(("id" = Uuid, Path), DeliveryParams),
    responses(
        (status = 200, description = "Newest first, each with its attempts (status code, latency, error) and next retry", body = DeliveryList),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    )
)]
pub async fn list_deliveries(
    _auth: Authorized<scope::WebhooksManage>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(params): ApiQuery<DeliveryParams>,
) -> Result<Json<DeliveryList>, ApiError> {
    let page = PageRequest::parse(params.limit, params.cursor.as_deref())?;
    let filter = DeliveryFilter { status: params.status };
    let page = state.webhooks.deliveries(id, &filter, &page).await?;
    Ok(Json(DeliveryList { deliveries: page.items, next_cursor: page.next_cursor }))
}

/// Retry a delivery now
///
/// Makes it due at once with room for one more attempt; `409` while an attempt of it is in flight.
/// Scope `webhooks:manage`.
#[utoipa::path(
    post, path = "/webhooks/{id}/deliveries/{delivery_id}/retry", tag = "webhooks", security(("api_key" = [])),
    params(("id" = Uuid, Path), ("delivery_id" = Uuid, Path)),
    responses(
        (status = 202, description = "Due now, with one more attempt allowed; same `webhook-id` as before", body = Delivery),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "An attempt is in flight", body = ErrorBody),
    )
)]
pub async fn retry_delivery(
    _auth: Authorized<scope::WebhooksManage>,
    State(state): State<AppState>,
    ApiPath((id, delivery_id)): ApiPath<(Uuid, Uuid)>,
) -> Result<(StatusCode, Json<Delivery>), ApiError> {
    Ok((StatusCode::ACCEPTED, Json(state.webhooks.redeliver(id, delivery_id).await?)))
}
