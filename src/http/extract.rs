//! axum's extractors with our rejection: a bad body, path or query string answers in the API's
//! error format (`ApiError`) instead of axum's plain text.

use axum::extract::{FromRequest, FromRequestParts};

use super::error::ApiError;

/// `Json<T>` whose rejections are `ApiError`s. Unknown fields are refused by the request types
/// themselves (`deny_unknown_fields`).
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);
