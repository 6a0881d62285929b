//! axum's extractors with our rejection: a bad body, path or query string answers in the API's
//! error format (`ApiError`) instead of axum's plain text.

use axum::extract::{FromRef, FromRequest, FromRequestParts, rejection::JsonRejection};

use super::{error::ApiError, state::AppState};

/// The JSON body limit of the routes outside the execute group (`RDEV_MAX_BODY_BYTES`), which
/// a 413 names. An execute route's body is buffered, and its limit named, before its handler.
#[derive(Clone, Copy)]
pub struct BodyLimit(pub usize);

impl FromRef<AppState> for BodyLimit {
    fn from_ref(state: &AppState) -> Self {
        Self(state.max_body_bytes)
    }
}

/// `Json<T>` whose rejections are `ApiError`s. Unknown fields are refused by the request types
/// themselves (`deny_unknown_fields`).
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    BodyLimit: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::of_json(rejection, BodyLimit::from_ref(state).0)),
        }
    }
}

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// A JSON body that may also be absent (empty) or `null`: then `T::default()`. For actions such
/// as `POST /api-keys/{id}/rotate` whose options are all optional, so `curl -X POST` just works
/// (and `null`, which the document allows for an optional body, means the same).
pub struct ApiJsonOrEmpty<T>(pub T);

impl<T, S> FromRequest<S> for ApiJsonOrEmpty<T>
where
    T: serde::de::DeserializeOwned + Default,
    BodyLimit: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        // The same decision as for any JSON body: 413 past the limit, 400 for a body that broke off.
        let limit = BodyLimit::from_ref(state).0;
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|rejection| ApiError::of_json(JsonRejection::BytesRejection(rejection), limit))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        let axum::Json(value) =
            axum::Json::<Option<T>>::from_bytes(&bytes).map_err(|rejection| ApiError::of_json(rejection, limit))?;
        Ok(Self(value.unwrap_or_default()))
    }
}
