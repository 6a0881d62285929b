//! Project files and folders to here: folders listed page by page, each file streamed to a
//! temporary file beside its target and renamed over it whole.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use futures_util::StreamExt;
use indicatif::ProgressBar;
use reqwest::{Method, header::ETAG};
use tokio::io::AsyncWriteExt;

use super::{etags::Etags, join, last_segment, progress};
use crate::{
    client::Client,
    commands::{lists::items, segment},
    error::{CliError, Result},
    output::field,
};

/// A project file to fetch and where it goes.
struct Download {
    remote: String,
    local: PathBuf,
    mode: Option<u32>,
}

/// Whether `path` in `project` is a folder (listing it works) rather than a file or nothing.
pub async fn is_folder(client: &Client, project: &str, path: &str) -> Result<bool> {
    let query = [("path", path.to_owned()), ("limit", "1".to_owned())];
    match client.get_json(&format!("/projects/{}/files", segment(project)), &query).await {
        Ok(_) => Ok(true),
        // A file (400) or nothing (404) at `path`; but an unknown project is an error.
        Err(CliError::Api { status: 400 | 404, message, .. }) if message != "project not found" => Ok(false),
        Err(error) => Err(error),
    }
}

pub async fn download(client: &Client, project: &str, path: &str, local: &Path) -> Result<()> {
    let folder = path.is_empty() || is_folder(client, project, path).await?;
    let into_folder = tokio::fs::metadata(local).await.is_ok_and(|metadata| metadata.is_dir());
    let name = if path.is_empty() { project } else { last_segment(path) };
    let target = if into_folder { local.join(name) } else { local.to_owned() };
    let (downloads, total, skipped) = if folder {
        tree(client, project, path, &target).await?
    } else {
        (vec![Download { remote: path.to_owned(), local: target, mode: None }], 0, 0)
    };
    let bar = progress(total);
    let mut etags = Etags::load();
    let mut result = Ok(());
    for download in &downloads {
        bar.set_message(download.remote.clone());
        result = fetch(client, &mut etags, &bar, project, download, !folder).await;
        if result.is_err() {
            break;
        }
    }
    bar.finish_and_clear();
    etags.save()?;
    if skipped > 0 {
        eprintln!("rdev: {skipped} symlinks and special files were not copied");
    }
    result
}

/// Every file under the project folder `path`, its folders made under `target`; the bytes in
/// all; how many entries are not files or folders.
async fn tree(client: &Client, project: &str, path: &str, target: &Path) -> Result<(Vec<Download>, u64, usize)> {
    let mut downloads = Vec::new();
    let (mut total, mut skipped) = (0, 0);
    let mut folders = vec![(path.to_owned(), target.to_owned())];
    while let Some((folder, local)) = folders.pop() {
        tokio::fs::create_dir_all(&local).await.map_err(CliError::io(local.display().to_string()))?;
        let mut cursor: Option<String> = None;
        loop {
            let mut query = vec![("path", folder.clone()), ("limit", "1000".to_owned())];
            query.extend(cursor.take().map(|cursor| ("cursor", cursor)));
            let page = client.get_json(&format!("/projects/{}/files", segment(project)), &query).await?;
            for entry in items(&page, "entries") {
                let name = field(entry, "name");
                if name.contains('/') || name == ".." || name == "." {
                    return Err(CliError::Protocol(format!("a folder entry named {name:?}")));
                }
                match entry["type"].as_str() {
                    Some("dir") => folders.push((join(&folder, &name), local.join(&name))),
                    Some("file") => {
                        total += entry["size"].as_u64().unwrap_or(0);
                        let mode = entry["mode"].as_str().and_then(|mode| u32::from_str_radix(mode, 8).ok());
                        downloads.push(Download { remote: join(&folder, &name), local: local.join(&name), mode });
                    }
                    _ => skipped += 1,
                }
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
    }
    Ok((downloads, total, skipped))
}

async fn fetch(
    client: &Client,
    etags: &mut Etags,
    bar: &ProgressBar,
    project: &str,
    download: &Download,
    sized_by_answer: bool,
) -> Result<()> {
    let request = client
        .request(Method::GET, &format!("/projects/{}/files/content", segment(project)))
        .query(&[("path", &download.remote)]);
    let response = client.send(request).await?;
    if sized_by_answer {
        bar.set_length(response.content_length().unwrap_or(0));
    }
    let etag = response.headers().get(ETAG).and_then(|value| value.to_str().ok()).map(str::to_owned);
    let partial = partial_path(&download.local);
    let written = write(response, &partial, bar).await;
    if let Err(error) = written {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(error);
    }
    if let Some(mode) = download.mode {
        let _ = tokio::fs::set_permissions(&partial, std::fs::Permissions::from_mode(mode & 0o777)).await;
    }
    tokio::fs::rename(&partial, &download.local).await.map_err(CliError::io(download.local.display().to_string()))?;
    if let Some(etag) = etag {
        etags.record(client.server(), project, &download.remote, &etag);
    }
    Ok(())
}

async fn write(response: reqwest::Response, partial: &Path, bar: &ProgressBar) -> Result<()> {
    let context = || partial.display().to_string();
    let mut file = tokio::fs::File::create(partial).await.map_err(CliError::io(context()))?;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        file.write_all(&chunk).await.map_err(CliError::io(context()))?;
        bar.inc(chunk.len() as u64);
    }
    file.sync_all().await.map_err(CliError::io(context()))
}

/// `.name.rdev-partial` beside the target: a rename away from it, never seen half-written.
fn partial_path(target: &Path) -> PathBuf {
    let name = target.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    target.with_file_name(format!(".{name}.rdev-partial"))
}
