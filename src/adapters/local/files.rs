//! `ProjectFiles` on the local executor's folders, contained by the kernel: every path is opened
//! beneath the project folder's directory handle (`cap-std`, which uses `openat2` with
//! `RESOLVE_BENEATH` on Linux), so no `..`, absolute symlink, or symlink swapped in between a
//! check and a use can reach outside it.
//!
//! File system calls block, so each operation runs on the blocking pool; bodies stream through
//! bounded channels in 64 KiB chunks, so a 100 MiB file never sits in memory. A write goes to a
//! temporary file in the target's folder, is fsynced, and is renamed over the target: readers and
//! other writers see the old file or a whole new one.

use std::{
    io::{self, Read, Seek, Write},
    path::PathBuf,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use bytes::Bytes;
use cap_std::{
    ambient_authority,
    fs::{Dir, OpenOptions, PermissionsExt as _},
};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::{
    domain::{
        DomainError, FileEntry, FileType, Project, ProjectPath, WrittenFile,
        apikey::hex,
        files::{file_not_found, file_too_large, path_escapes},
    },
    ports::{ByteStream, FileContent, ProjectFiles, WriteRules},
};

const CHUNK: usize = 64 * 1024;
/// Chunks in flight between the blocking pool and the connection, each way.
const CHANNEL_CHUNKS: usize = 4;

pub struct LocalFiles {
    root: PathBuf,
    /// Serialises the check of `If-Match` with the rename that follows it.
    replacing: Arc<Mutex<()>>,
}

impl LocalFiles {
    /// `root` is the projects folder.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into(), replacing: Arc::default() }
    }

    fn project_dir(&self, project: &Project) -> Result<Dir, DomainError> {
        Dir::open_ambient_dir(self.root.join(project.id.as_str()), ambient_authority())
            .map_err(|_| DomainError::not_found("project", project.id.as_str()))
    }
}

/// What an I/O error on `path` means to the client.
fn io_error(path: &ProjectPath, error: io::Error) -> DomainError {
    match error.kind() {
        io::ErrorKind::NotFound => file_not_found(path),
        // cap-std's answer to a path that would leave the folder (openat2's EXDEV, or its own
        // check where openat2 is missing).
        io::ErrorKind::PermissionDenied if error.to_string().contains("outside of the filesystem") => path_escapes(),
        io::ErrorKind::NotADirectory => DomainError::invalid("path", "a part of it is not a folder"),
        io::ErrorKind::IsADirectory => DomainError::invalid("path", "is a folder"),
        io::ErrorKind::InvalidFilename => DomainError::invalid("path", "a name in it is too long"),
        io::ErrorKind::DirectoryNotEmpty => DomainError::invalid("path", "is a folder that is not empty"),
        _ => DomainError::internal(anyhow::Error::new(error).context(format!("file {}", path.display()))),
    }
}

fn joined(error: tokio::task::JoinError) -> DomainError {
    DomainError::internal(anyhow::Error::new(error).context("a file operation's task"))
}

fn entry_of(name: String, metadata: &cap_std::fs::Metadata) -> FileEntry {
    let file_type = metadata.file_type();
    let kind = if file_type.is_symlink() {
        FileType::Symlink
    } else if file_type.is_dir() {
        FileType::Dir
    } else if file_type.is_file() {
        FileType::File
    } else {
        FileType::Other
    };
    let modified_at = metadata.modified().ok().map(|t| chrono::DateTime::<chrono::Utc>::from(t.into_std()));
    FileEntry {
        name,
        kind,
        size: metadata.len(),
        mode: format!("{:o}", metadata.permissions().mode() & 0o7777),
        modified_at,
    }
}

/// The folder `path` names, opened beneath the project.
fn open_folder(dir: &Dir, path: &ProjectPath) -> Result<Dir, DomainError> {
    if path.is_root() {
        return dir.try_clone().map_err(|e| io_error(path, e));
    }
    dir.open_dir(path.as_str()).map_err(|e| io_error(path, e))
}

fn sha256_of(file: &mut std::fs::File) -> io::Result<(String, u64)> {
    let mut hash = Sha256::new();
    let mut buf = vec![0; CHUNK];
    let mut size = 0;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok((hex(&hash.finalize()), size));
        }
        hash.update(&buf[..n]);
        size += n as u64;
    }
}

#[async_trait]
impl ProjectFiles for LocalFiles {
    async fn list(&self, project: &Project, path: &ProjectPath) -> Result<Vec<FileEntry>, DomainError> {
        let dir = self.project_dir(project)?;
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            if !path.is_root() && dir.symlink_metadata(path.as_str()).is_ok_and(|m| m.is_file()) {
                return Err(DomainError::invalid("path", "is a file, not a folder"));
            }
            let folder = open_folder(&dir, &path)?;
            let mut entries = Vec::new();
            for entry in folder.entries().map_err(|e| io_error(&path, e))? {
                let entry = entry.map_err(|e| io_error(&path, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let Ok(metadata) = folder.symlink_metadata(entry.file_name()) else { continue };
                entries.push(entry_of(name, &metadata));
            }
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(entries)
        })
        .await
        .map_err(joined)?
    }

    async fn read(&self, project: &Project, path: &ProjectPath) -> Result<FileContent, DomainError> {
        let dir = self.project_dir(project)?;
        let path = path.clone();
        let (sender, receiver) = mpsc::channel::<Result<Bytes, DomainError>>(CHANNEL_CHUNKS);
        let (opened_tx, opened) = tokio::sync::oneshot::channel();
        tokio::task::spawn_blocking(move || {
            let open = || -> Result<(std::fs::File, String, u64), DomainError> {
                if path.is_root() {
                    return Err(DomainError::invalid("path", "is a folder"));
                }
                let mut file = dir.open(path.as_str()).map_err(|e| io_error(&path, e))?.into_std();
                if file.metadata().map_err(|e| io_error(&path, e))?.is_dir() {
                    return Err(DomainError::invalid("path", "is a folder"));
                }
                // The same open file is hashed, then sent: a rename over it changes neither.
                let (sha256, size) = sha256_of(&mut file).map_err(|e| io_error(&path, e))?;
                file.rewind().map_err(|e| io_error(&path, e))?;
                Ok((file, sha256, size))
            };
            let (mut file, sha256, size) = match open() {
                Ok(opened) => opened,
                Err(error) => {
                    let _ = opened_tx.send(Err(error));
                    return;
                }
            };
            let _ = opened_tx.send(Ok((sha256, size)));
            let mut left = size;
            while left > 0 {
                let mut buf = vec![0; CHUNK.min(usize::try_from(left).unwrap_or(CHUNK))];
                let chunk = match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        left = left.saturating_sub(n as u64);
                        Ok(Bytes::from(buf))
                    }
                    Err(error) => Err(io_error(&path, error)),
                };
                let failed = chunk.is_err();
                // The client went away: stop reading.
                if sender.blocking_send(chunk).is_err() || failed {
                    return;
                }
            }
        });
        let (sha256, size) =
            opened.await.map_err(|_| DomainError::internal(anyhow::anyhow!("file reader ended")))??;
        let body =
            futures_util::stream::unfold(receiver, |mut r| async move { r.recv().await.map(|c| (c, r)) }).boxed();
        Ok(FileContent { size, sha256, body })
    }

    async fn write(
        &self,
        project: &Project,
        path: &ProjectPath,
        mut body: ByteStream,
        rules: WriteRules,
    ) -> Result<WrittenFile, DomainError> {
        let Some((parent, name)) = path.split().map(|(p, n)| (p.to_owned(), n.to_owned())) else {
            return Err(DomainError::invalid("path", "is the project's folder"));
        };
        if rules.length.is_some_and(|length| length > rules.max_bytes) {
            return Err(file_too_large(rules.max_bytes));
        }
        let dir = self.project_dir(project)?;
        // `Err` says the body broke off: nothing is stored.
        let (sender, mut receiver) = mpsc::channel::<Result<Bytes, ()>>(CHANNEL_CHUNKS);
        let (path, replacing) = (path.clone(), self.replacing.clone());
        let writer = tokio::task::spawn_blocking(move || -> Result<WrittenFile, DomainError> {
            // A part that exists but is no folder here (a symlink, a file) is refused by the open
            // below, with the reason: outside the project, or not a folder.
            if !parent.is_empty()
                && let Err(error) = dir.create_dir_all(&parent)
                && error.kind() != io::ErrorKind::AlreadyExists
            {
                return Err(io_error(&path, error));
            }
            let folder = if parent.is_empty() { dir } else { dir.open_dir(&parent).map_err(|e| io_error(&path, e))? };
            let temporary = format!(".rdev-upload-{}", uuid::Uuid::new_v4().simple());
            let mut file = folder
                .open_with(&temporary, OpenOptions::new().write(true).create_new(true))
                .map_err(|e| io_error(&path, e))?
                .into_std();
            let stored = (|| {
                let mut hash = Sha256::new();
                let mut size = 0u64;
                while let Some(chunk) = receiver.blocking_recv() {
                    let chunk = chunk.map_err(|()| DomainError::invalid("body", "broke off"))?;
                    size += chunk.len() as u64;
                    if size > rules.max_bytes {
                        return Err(file_too_large(rules.max_bytes));
                    }
                    hash.update(&chunk);
                    file.write_all(&chunk).map_err(|e| io_error(&path, e))?;
                }
                file.sync_all().map_err(|e| io_error(&path, e))?;
                let _replacing = replacing.lock().unwrap_or_else(|p| p.into_inner());
                let existing = folder.symlink_metadata(&name).ok();
                if existing.as_ref().is_some_and(|m| m.is_dir()) {
                    return Err(DomainError::invalid("path", "is a folder"));
                }
                // A symlink is replaced only if it leads somewhere inside the project.
                if existing.as_ref().is_some_and(|m| m.is_symlink())
                    && let Err(error) = folder.metadata(&name)
                    && error.kind() != io::ErrorKind::NotFound
                {
                    return Err(io_error(&path, error));
                }
                if let Some(expected) = &rules.if_match {
                    let current = match folder.open(&name) {
                        Ok(file) => Some(sha256_of(&mut file.into_std()).map_err(|e| io_error(&path, e))?.0),
                        Err(_) => None,
                    };
                    if current.as_deref() != Some(expected.as_str()) {
                        return Err(DomainError::PreconditionFailed("the file's ETag differs from If-Match".into()));
                    }
                }
                folder.rename(&temporary, &folder, &name).map_err(|e| io_error(&path, e))?;
                Ok(WrittenFile {
                    path: path.display(),
                    size,
                    sha256: hex(&hash.finalize()),
                    created: existing.is_none(),
                })
            })();
            if stored.is_err() {
                let _ = folder.remove_file(&temporary);
            }
            stored
        });
        // The body goes to the writer as it arrives; a writer that stopped (an error) ends it.
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => {
                    if sender.send(Ok(chunk)).await.is_err() {
                        break;
                    }
                }
                Err(error) => {
                    // A body that broke off stores nothing: the writer sees an error, not an end.
                    let _ = sender.send(Err(())).await;
                    drop(sender);
                    let _ = writer.await;
                    return Err(error);
                }
            }
        }
        drop(sender);
        writer.await.map_err(joined)?
    }

    async fn delete(&self, project: &Project, path: &ProjectPath, recursive: bool) -> Result<(), DomainError> {
        if path.is_root() {
            return Err(DomainError::invalid("path", "is the project's folder"));
        }
        let dir = self.project_dir(project)?;
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            let metadata = dir.symlink_metadata(path.as_str()).map_err(|e| io_error(&path, e))?;
            if metadata.is_dir() {
                if !recursive {
                    return Err(DomainError::invalid("path", "is a folder: delete it with recursive=true"));
                }
                dir.remove_dir_all(path.as_str()).map_err(|e| io_error(&path, e))
            } else {
                dir.remove_file(path.as_str()).map_err(|e| io_error(&path, e))
            }
        })
        .await
        .map_err(joined)?
    }
}
