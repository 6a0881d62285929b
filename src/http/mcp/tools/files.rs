//! The file tools: list, read (text, or base64 for other bytes, up to a cap, with its ETag),
//! write and delete (with `if_match`).

use axum::{
    body::Body,
    http::{Method, header},
};
use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use rmcp::model::JsonObject;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::{Outcome, ToolSpec, parse, schema_of, tool};
use crate::{
    domain::Scope,
    http::mcp::api_call::{Api, MAX_JSON_BYTES, ToolError, read_body, segment, with_query},
};

/// What read_file answers unless asked for more, and the most it may be asked for.
const DEFAULT_READ_BYTES: u64 = 1 << 20;
const MAX_READ_BYTES: u64 = 8 << 20;

pub fn tools() -> Vec<ToolSpec> {
    vec![
        tool(
            "list_files",
            Scope::FilesRead,
            "List a folder of a project, sorted by name, a page at a time (pass next_cursor as cursor).",
            schema_of::<ListFiles>(),
            true,
        ),
        tool(
            "read_file",
            Scope::FilesRead,
            "Read a file of a project: its content as text (encoding utf-8) or, for other bytes, base64 (encoding base64), \
             and its etag, which write_file and delete_file take as if_match. Files over max_bytes are refused.",
            schema_of::<ReadFile>(),
            true,
        ),
        tool(
            "write_file",
            Scope::FilesWrite,
            "Write a file of a project, whole (missing folders are made). With if_match (the etag read_file gave), \
             a file someone changed since is refused with PRECONDITION_FAILED and kept.",
            schema_of::<WriteFile>(),
            false,
        ),
        tool(
            "delete_file",
            Scope::FilesWrite,
            "Delete a file (only if its etag is still if_match, when given), or a folder with everything in it (recursive).",
            schema_of::<DeleteFile>(),
            false,
        ),
    ]
}

/// A folder to list.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListFiles {
    /// The project's id, as list_projects gives it.
    project: String,
    /// The folder, relative to the project (default: its root).
    path: Option<String>,
    /// The next_cursor of the previous page.
    cursor: Option<String>,
    /// 1 to 1000 entries (default 1000).
    #[schema(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// A file to read.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadFile {
    /// The project's id, as list_projects gives it.
    project: String,
    /// The file, relative to the project.
    path: String,
    /// The largest file to read, 1 to 8388608 bytes (default 1048576).
    #[schema(minimum = 1, maximum = 8388608)]
    max_bytes: Option<u64>,
}

/// How write_file's content is written.
#[derive(Deserialize, ToSchema, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// The content is the text itself.
    #[default]
    #[serde(rename = "utf-8")]
    Utf8,
    /// The content is base64 (standard alphabet, padded) of the bytes.
    Base64,
}

/// A file to write.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteFile {
    /// The project's id, as list_projects gives it.
    project: String,
    /// The file, relative to the project.
    path: String,
    /// The whole new content, as `encoding` says.
    content: String,
    /// utf-8 (default) or base64.
    #[serde(default)]
    #[schema(inline)]
    encoding: Encoding,
    /// Write only if the file's etag is still this one (as read_file gave it); `*`: only over an existing file.
    if_match: Option<String>,
}

/// A file or folder to delete.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteFile {
    /// The project's id, as list_projects gives it.
    project: String,
    /// The file or folder, relative to the project.
    path: String,
    /// A folder goes only with this, and everything in it with it.
    #[serde(default)]
    recursive: bool,
    /// Delete the file only if its etag is still this one.
    if_match: Option<String>,
}

fn files_path(project: &str, rest: &str) -> String {
    format!("/projects/{}/files{rest}", segment(project))
}

/// An ETag as `If-Match` takes it: quoted, unless it is `*`.
fn quoted(etag: &str) -> String {
    let bare = etag.trim().trim_matches('"');
    if bare == "*" { bare.to_owned() } else { format!("\"{bare}\"") }
}

pub async fn list_files(api: Api<'_>, arguments: JsonObject) -> Outcome {
    let ListFiles { project, path, cursor, limit } = parse(arguments)?;
    let query = [("path", path), ("cursor", cursor), ("limit", limit.map(|limit| limit.to_string()))];
    Ok(api.json(Method::GET, &with_query(&files_path(&project, ""), &query), None).await?.into())
}

pub async fn read_file(api: Api<'_>, arguments: JsonObject) -> Outcome {
    let ReadFile { project, path, max_bytes } = parse(arguments)?;
    let cap = max_bytes.unwrap_or(DEFAULT_READ_BYTES);
    if !(1..=MAX_READ_BYTES).contains(&cap) {
        return Err(ToolError::invalid("max_bytes", "must be 1 to 8388608"));
    }
    let uri = with_query(&files_path(&project, "/content"), &[("path", Some(path.clone()))]);
    let response = api.accepted(api.request(Method::GET, &uri).body(Body::empty())).await?;
    let etag = response
        .headers()
        .get(header::ETAG)
        .and_then(|value| value.to_str().ok())
        .map(|etag| etag.trim_matches('"').to_owned());
    let size =
        response.headers().get(header::CONTENT_LENGTH).and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if let Some(size) = size.filter(|&size| size > cap) {
        return Err(too_large(&path, size, cap));
    }
    let limit = usize::try_from(cap).unwrap_or(usize::MAX);
    let bytes = read_body(response, limit).await.map_err(|_| too_large(&path, cap + 1, cap))?;
    let (encoding, content) = match std::str::from_utf8(&bytes) {
        Ok(text) => ("utf-8", text.to_owned()),
        Err(_) => ("base64", BASE64.encode(&bytes)),
    };
    Ok(json!({"path": path, "size": bytes.len(), "etag": etag, "encoding": encoding, "content": content}).into())
}

fn too_large(path: &str, size: u64, cap: u64) -> ToolError {
    ToolError::invalid(
        "max_bytes",
        &format!(
            "{path} is {size} bytes, over max_bytes ({cap}): raise it (up to 8388608), or read parts with run_command (head -c, tail -c)"
        ),
    )
}

pub async fn write_file(api: Api<'_>, arguments: JsonObject) -> Outcome {
    let WriteFile { project, path, content, encoding, if_match } = parse(arguments)?;
    let bytes = match encoding {
        Encoding::Utf8 => content.into_bytes(),
        Encoding::Base64 => {
            BASE64.decode(content.as_bytes()).map_err(|_| ToolError::invalid("content", "is not base64"))?
        }
    };
    let uri = with_query(&files_path(&project, "/content"), &[("path", Some(path))]);
    let mut request = api.request(Method::PUT, &uri).header(header::CONTENT_LENGTH, bytes.len());
    if let Some(etag) = if_match {
        request = request.header(header::IF_MATCH, quoted(&etag));
    }
    let response = api.accepted(request.body(Body::from(bytes))).await?;
    let written: Value = serde_json::from_slice(&read_body(response, MAX_JSON_BYTES).await?).unwrap_or_default();
    Ok(written.into())
}

pub async fn delete_file(api: Api<'_>, arguments: JsonObject) -> Outcome {
    let DeleteFile { project, path, recursive, if_match } = parse(arguments)?;
    let query = [("path", Some(path.clone())), ("recursive", recursive.then(|| "true".to_owned()))];
    let mut request = api.request(Method::DELETE, &with_query(&files_path(&project, ""), &query));
    if let Some(etag) = if_match {
        request = request.header(header::IF_MATCH, quoted(&etag));
    }
    api.accepted(request.body(Body::empty())).await?;
    Ok(json!({"deleted": path}).into())
}
