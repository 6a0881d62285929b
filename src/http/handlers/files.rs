//! A project's files: `GET /projects/{id}/files` (list a folder), `GET|PUT
//! /projects/{id}/files/content` (read, write), `DELETE /projects/{id}/files`. Bodies stream
//! both ways: a file is never held in memory whole.

use axum::{
    Json,
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures_util::{StreamExt, TryStreamExt};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::{
    domain::{DomainError, FileListing, ProjectId, WrittenFile},
    http::{
        auth::{Authorized, scope},
        error::{ApiError, ErrorBody},
        extract::{ApiPath, ApiQuery},
        state::AppState,
    },
};

/// Raw bytes (`application/octet-stream`), as the OpenAPI document declares a binary body.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct RawBytes(#[allow(dead_code)] Vec<u8>);

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FolderParams {
    /// A folder relative to the project root (default: the root).
    path: Option<String>,
    /// Entries per page, 1 to 1000 (default 1000).
    limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FileParams {
    /// A file relative to the project root.
    path: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteParams {
    /// A file or folder relative to the project root.
    path: String,
    /// Deletes a folder with everything in it; without it a folder is refused.
    recursive: Option<bool>,
}

/// List a folder
///
/// A page of its entries sorted by name (byte order): files, folders, symlinks (not followed)
/// and others, with size, permission bits and modification time; `next_cursor` lists the
/// rest. Scope `files:read`.
#[utoipa::path(
    get, path = "/projects/{id}/files", tag = "files", security(("api_key" = [])),
    params(("id" = String, Path, description = "Project id", pattern = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$"), FolderParams),
    responses(
        (status = 200, body = FileListing),
        (status = 400, description = "A path outside the project, or a file", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "No such project or folder", body = ErrorBody), (status = 429, body = ErrorBody),
    )
)]
pub async fn list_files(
    _auth: Authorized<scope::FilesRead>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<FolderParams>,
) -> Result<Json<FileListing>, ApiError> {
    let id = ProjectId::parse(&id)?;
    Ok(Json(state.files.list(&id, params.path.as_deref(), params.limit, params.cursor.as_deref()).await?))
}

/// Read a file
///
/// Its raw bytes, with `Content-Length` and `ETag` (for `If-Match`: the quoted sha256 of the
/// content up to `RDEV_ETAG_HASH_MAX`, a digest of the file's identity and times above). Only
/// regular files: a FIFO, socket or device is 400. Scope `files:read`.
#[utoipa::path(
    get, path = "/projects/{id}/files/content", tag = "files", security(("api_key" = [])),
    params(("id" = String, Path, description = "Project id", pattern = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$"), FileParams),
    responses(
        (status = 200, description = "The file's bytes", content_type = "application/octet-stream", body = RawBytes,
            headers(("ETag" = String, description = "The file's quoted ETag"))),
        (status = 400, description = "A path outside the project, a folder, or no regular file", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "file not found", body = ErrorBody), (status = 429, body = ErrorBody),
    )
)]
pub async fn read_file(
    _auth: Authorized<scope::FilesRead>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<FileParams>,
) -> Result<Response, ApiError> {
    let id = ProjectId::parse(&id)?;
    let content = state.files.read(&id, &params.path).await?;
    let body = Body::from_stream(content.body.map_err(|error| std::io::Error::other(error.to_string())));
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(content.size));
    if let Ok(etag) = HeaderValue::try_from(format!("\"{}\"", content.etag)) {
        headers.insert(header::ETAG, etag);
    }
    Ok(response)
}

/// Write a file
///
/// The raw body becomes the file, its folders created: all or nothing (a reader sees the old
/// file or the new one). `If-Match: <ETag>` writes only over that content (`*`: over any
/// existing file). `201` when it is new, `200` when it replaced one. At most
/// `RDEV_MAX_FILE_BYTES`. Audited. Scope `files:write`.
#[utoipa::path(
    put, path = "/projects/{id}/files/content", tag = "files", security(("api_key" = [])),
    params(
        ("id" = String, Path, description = "Project id", pattern = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$"),
        FileParams,
        ("If-Match" = Option<String>, Header, description = "The ETag the file must have now, or `*`"),
    ),
    request_body(content = RawBytes, content_type = "application/octet-stream", description = "The file's new bytes"),
    responses(
        (status = 201, description = "Created", body = WrittenFile),
        (status = 200, description = "Replaced", body = WrittenFile),
        (status = 400, description = "A path outside the project, or a folder", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "project not found", body = ErrorBody),
        (status = 412, description = "PRECONDITION_FAILED: the file does not match If-Match", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 429, body = ErrorBody),
    )
)]
pub async fn write_file(
    auth: Authorized<scope::FilesWrite>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<FileParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = ProjectId::parse(&id)?;
    let if_match = headers.get(header::IF_MATCH).map(|v| v.to_str().unwrap_or("\u{0}")).map(str::to_owned);
    let length = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
    let stream = body
        .into_data_stream()
        .map_err(|error| {
            if crate::http::server::is_stalled_body(&error) {
                DomainError::BodyStalled
            } else {
                DomainError::invalid("body", format!("could not be read: {error}"))
            }
        })
        .boxed();
    let written = state.files.write(&auth.caller, &id, &params.path, stream, if_match.as_deref(), length).await?;
    let status = if written.created { StatusCode::CREATED } else { StatusCode::OK };
    let etag = HeaderValue::try_from(format!("\"{}\"", written.etag)).ok();
    let mut response = (status, Json(written)).into_response();
    if let Some(etag) = etag {
        response.headers_mut().insert(header::ETAG, etag);
    }
    Ok(response)
}

/// Delete a file or folder
///
/// A file (a symlink itself, not what it points to), or a folder with `recursive=true`.
/// `If-Match: <ETag>` deletes only a file with that content. Audited. Scope `files:write`.
#[utoipa::path(
    delete, path = "/projects/{id}/files", tag = "files", security(("api_key" = [])),
    params(
        ("id" = String, Path, description = "Project id", pattern = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$"),
        ("If-Match" = Option<String>, Header, description = "The ETag the file must have now, or `*`"),
        DeleteParams
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 412, description = "PRECONDITION_FAILED: the file does not match If-Match", body = ErrorBody),
        (status = 400, description = "A path outside the project, the root, or a folder without recursive=true", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "file not found", body = ErrorBody), (status = 429, body = ErrorBody),
    )
)]
pub async fn delete_file(
    auth: Authorized<scope::FilesWrite>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<DeleteParams>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let id = ProjectId::parse(&id)?;
    let if_match = headers.get(header::IF_MATCH).map(|v| v.to_str().unwrap_or("\u{0}"));
    state.files.delete(&auth.caller, &id, &params.path, params.recursive.unwrap_or(false), if_match).await?;
    Ok(StatusCode::NO_CONTENT)
}
