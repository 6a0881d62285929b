//! Local files and folders into a project: each file streamed in one `PUT`, its length known,
//! with `If-Match` when rdev knows the version it would replace.

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use indicatif::ProgressBar;
use reqwest::{
    Method,
    header::{CONTENT_LENGTH, IF_MATCH},
};
use serde_json::Value;
use tokio_util::io::ReaderStream;

use super::{
    etags::{Etags, quoted},
    join, progress,
};
use crate::{
    args::CpArgs,
    client::Client,
    commands::segment,
    error::{CliError, Result},
    output::field,
};

/// A file to send and where it goes.
struct Upload {
    local: PathBuf,
    remote: String,
    size: u64,
}

pub async fn upload(client: &Client, local: &Path, project: &str, path: &str, args: &CpArgs) -> Result<()> {
    let metadata = tokio::fs::metadata(local).await.map_err(CliError::io(local.display().to_string()))?;
    let into_folder = path.is_empty() || super::download::is_folder(client, project, path).await?;
    let base = if into_folder { join(path, &local_name(local)?) } else { path.to_owned() };
    let (uploads, skipped) = if metadata.is_dir() {
        walk(local, &base)?
    } else if metadata.is_file() {
        (vec![Upload { local: local.to_owned(), remote: base, size: metadata.len() }], 0)
    } else {
        return Err(CliError::Usage(format!("{}: only files and folders are copied", local.display())));
    };
    let bar = progress(uploads.iter().map(|upload| upload.size).sum());
    let mut etags = Etags::load();
    let mut result = Ok(());
    for upload in &uploads {
        bar.set_message(upload.remote.clone());
        result = put(client, &mut etags, &bar, project, upload, args).await;
        if result.is_err() {
            break;
        }
    }
    bar.finish_and_clear();
    etags.save()?;
    if skipped > 0 {
        eprintln!("rdev: {skipped} symlinks, special files and empty folders were not copied");
    }
    result
}

/// The name a copy into a folder takes: the last component, `.` resolved.
fn local_name(local: &Path) -> Result<String> {
    let absolute = std::fs::canonicalize(local).map_err(CliError::io(local.display().to_string()))?;
    absolute
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .ok_or_else(|| CliError::Usage(format!("{}: name a folder to copy, not /", local.display())))
}

/// Every regular file under `root`, with its path under `base`; and how many entries are not
/// copied (symlinks, special files, empty folders: the API writes files only).
fn walk(root: &Path, base: &str) -> Result<(Vec<Upload>, usize)> {
    let mut uploads = Vec::new();
    let mut skipped = 0;
    for entry in walkdir::WalkDir::new(root).follow_links(false).sort_by_file_name() {
        let entry = entry.map_err(|error| CliError::Usage(format!("reading {}: {error}", root.display())))?;
        let kind = entry.file_type();
        if kind.is_dir() {
            let empty = std::fs::read_dir(entry.path()).map(|mut entries| entries.next().is_none()).unwrap_or(false);
            skipped += usize::from(empty);
            continue;
        }
        if !kind.is_file() {
            skipped += 1;
            continue;
        }
        let relative = entry.path().strip_prefix(root).unwrap_or(entry.path());
        let relative: Vec<String> =
            relative.components().map(|part| part.as_os_str().to_string_lossy().into_owned()).collect();
        let size = entry.metadata().map(|metadata| metadata.len()).unwrap_or(0);
        uploads.push(Upload { local: entry.path().to_owned(), remote: join(base, &relative.join("/")), size });
    }
    Ok((uploads, skipped))
}

async fn put(
    client: &Client,
    etags: &mut Etags,
    bar: &ProgressBar,
    project: &str,
    upload: &Upload,
    args: &CpArgs,
) -> Result<()> {
    let file = tokio::fs::File::open(&upload.local).await.map_err(CliError::io(upload.local.display().to_string()))?;
    let counted = bar.clone();
    let body = ReaderStream::with_capacity(file, 256 << 10).inspect(move |chunk| {
        if let Ok(chunk) = chunk {
            counted.inc(chunk.len() as u64);
        }
    });
    let server = client.server();
    let if_match = match (&args.if_match, args.force) {
        (Some(etag), _) => Some(quoted(etag)),
        (None, false) => etags.get(server, project, &upload.remote).map(quoted),
        (None, true) => None,
    };
    let mut request = client
        .request(Method::PUT, &format!("/projects/{}/files/content", segment(project)))
        .query(&[("path", &upload.remote)])
        .header(CONTENT_LENGTH, upload.size)
        .body(reqwest::Body::wrap_stream(body));
    if let Some(etag) = &if_match {
        request = request.header(IF_MATCH, etag);
    }
    match client.send(request).await {
        Ok(response) => {
            let answer: Value = response.json().await?;
            etags.record(server, project, &upload.remote, &field(&answer, "etag"));
            Ok(())
        }
        Err(CliError::Api { status: 412, code, .. }) => {
            let why = if args.if_match.is_some() {
                format!("its ETag is no longer {}", if_match.unwrap_or_default())
            } else {
                "it changed on the server since rdev copied it".to_owned()
            };
            Err(CliError::Api {
                status: 412,
                code,
                message: format!("{project}:{} not replaced: {why} (--force replaces it anyway)", upload.remote),
            })
        }
        Err(error) => Err(error),
    }
}
