//! `ProjectFiles` on the local executor's folders, contained by the kernel: every path is opened
//! beneath the project folder's directory handle (`cap-std`, which uses `openat2` with
//! `RESOLVE_BENEATH` on Linux), so no `..`, absolute symlink, or symlink swapped in between a
//! check and a use can reach outside it.
//!
//! No request can hold a thread for longer than one short job, whatever it names or however
//! slowly it sends or reads:
//! - Only regular files are read or replaced. A file is opened with `O_NONBLOCK` and looked at
//!   before anything reads it, so a FIFO, socket or device is refused at once.
//! - All file work runs on a pool of its own (`pool`), a chunk, a page or a slice of a deletion
//!   per job: a slow client costs a buffer, never a thread.
//! - ETags cost a `stat` (`etag`); a replace checks `If-Match` under a lock of that path only.
//! - A write goes to a temporary file in the scratch folder (beside the projects, out of every
//!   project's sight), is fsynced, and is renamed over the target: readers and other writers see
//!   the old file or a whole new one, and what a crash leaves is removed at the next start.
//! - A folder is deleted without recursion and with two descriptors open (`removal`).
//! - A listing is a page, read in memory proportional to the page (`listing`).

mod etag;
mod listing;
mod pool;
mod removal;
mod scratch;

use std::{
    hash::BuildHasher as _,
    io,
    os::unix::fs::FileExt as _,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use cap_std::{
    ambient_authority,
    fs::{Dir, OpenOptions, OpenOptionsExt as _, PermissionsExt as _},
};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use self::{
    etag::{Etags, Version},
    pool::FilePool,
    removal::{Removal, scratch_name},
    scratch::Scratch,
};
use crate::{
    domain::{
        DomainError, FileEntry, FileType, FolderPage, IfMatch, Project, ProjectPath, WrittenFile,
        apikey::hex,
        files::{file_not_found, file_too_large, not_a_regular_file, path_escapes},
    },
    ports::{ByteStream, FileContent, FolderEntries, ProjectFiles, WriteRules},
};

/// Bytes read or written per job on the pool.
const CHUNK: usize = 256 * 1024;
/// Locks of paths being replaced (a path takes one by its hash).
const PATH_LOCKS: usize = 64;

/// The bounds of file work.
#[derive(Debug, Clone, Copy)]
pub struct FileLimits {
    /// File system jobs at once (`RDEV_FILE_WORKERS`).
    pub workers: usize,
    /// The largest file whose ETag is its sha256 (`RDEV_ETAG_HASH_MAX`).
    pub hash_max: u64,
}

pub struct LocalFiles {
    root: PathBuf,
    scratch: Arc<Scratch>,
    pool: FilePool,
    etags: Etags,
    /// Serialise the check of `If-Match` with the rename that follows it, per path.
    path_locks: Arc<[Mutex<()>; PATH_LOCKS]>,
    hasher: std::collections::hash_map::RandomState,
}

impl LocalFiles {
    /// `root` is the projects folder. Makes this server's scratch folder and starts removing
    /// what a crash left in the scratch folder. Blocking (at start).
    pub fn new(root: impl Into<PathBuf>, limits: FileLimits) -> io::Result<Self> {
        let root = root.into();
        let (scratch, leftovers) = Scratch::open(&root)?;
        let files = Self {
            root,
            scratch: Arc::new(scratch),
            pool: FilePool::new(limits.workers),
            etags: Etags::new(limits.hash_max),
            path_locks: Arc::new(std::array::from_fn(|_| Mutex::new(()))),
            hasher: std::collections::hash_map::RandomState::new(),
        };
        tokio::spawn(finish_removal(files.pool.clone(), leftovers, files.scratch.own()));
        Ok(files)
    }

    fn project_dir(&self, project: &Project) -> Result<Dir, DomainError> {
        Dir::open_ambient_dir(self.root.join(project.id.as_str()), ambient_authority())
            .map_err(|_| DomainError::not_found("project", project.id.as_str()))
    }

    fn path_lock(&self, project: &Project, path: &ProjectPath) -> usize {
        (self.hasher.hash_one((project.id.as_str(), path.as_str())) % PATH_LOCKS as u64) as usize
    }
}

/// Runs `removal` to its end, a slice per job.
async fn finish_removal(pool: FilePool, mut removal: Removal, scratch: Arc<Dir>) {
    while !removal.is_done() {
        let scratch = scratch.clone();
        match pool.run(move || removal.step(&scratch).map(|()| removal)).await {
            Ok(Ok(left)) => removal = left,
            Ok(Err(error)) => return tracing::warn!(%error, "could not finish removing a deleted folder"),
            Err(error) => return tracing::warn!(%error, "could not finish removing a deleted folder"),
        }
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
        // A Unix socket cannot be opened.
        _ if error.raw_os_error() == Some(libc::ENXIO) => not_a_regular_file(),
        _ => DomainError::internal(anyhow::Error::new(error).context(format!("file {}", path.display()))),
    }
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

/// The folder `parent` (a path's folder part, empty for the project's root) of the project
/// folder `dir`; `path` is the whole path, for the error.
fn parent_folder(dir: Dir, parent: &str, path: &ProjectPath) -> Result<Dir, DomainError> {
    if parent.is_empty() { Ok(dir) } else { dir.open_dir(parent).map_err(|e| io_error(path, e)) }
}

/// Opens `name` in `folder` for reading if it is a regular file, without waiting on anything
/// else (a FIFO opened with `O_NONBLOCK` returns at once, and is refused by what it is).
fn open_regular(folder: &Dir, name: &str, path: &ProjectPath) -> Result<(std::fs::File, Version), DomainError> {
    let mut options = OpenOptions::new();
    options.read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    let file = folder.open_with(name, &options).map_err(|e| io_error(path, e))?.into_std();
    let metadata = file.metadata().map_err(|e| io_error(path, e))?;
    if metadata.is_dir() {
        return Err(DomainError::invalid("path", "is a folder"));
    }
    if !metadata.is_file() {
        return Err(not_a_regular_file());
    }
    Ok((file, Version::of(&metadata)))
}

/// What a write found at its target before it wrote.
enum Target {
    Missing,
    /// A regular file at this version (reached through a symlink inside the project, maybe).
    File(Version),
}

/// What is at `name` in `folder` now, refusing what a write must not replace. Blocking.
fn target_of(folder: &Dir, name: &str, path: &ProjectPath) -> Result<(Target, Option<std::fs::File>), DomainError> {
    match folder.symlink_metadata(name) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok((Target::Missing, None)),
        Err(error) => return Err(io_error(path, error)),
        Ok(metadata) if metadata.is_dir() => return Err(DomainError::invalid("path", "is a folder")),
        Ok(_) => {}
    }
    match open_regular(folder, name, path) {
        Ok((file, version)) => Ok((Target::File(version), Some(file))),
        // A dangling symlink inside the project: the write makes what it names.
        Err(DomainError::NotFound { .. }) => Ok((Target::Missing, None)),
        Err(error) => Err(error),
    }
}

impl Target {
    fn version(&self) -> Option<Version> {
        match self {
            Self::Missing => None,
            Self::File(version) => Some(*version),
        }
    }
}

#[async_trait]
impl ProjectFiles for LocalFiles {
    async fn list(
        &self,
        project: &Project,
        path: &ProjectPath,
        page: &FolderPage,
    ) -> Result<FolderEntries, DomainError> {
        let dir = self.project_dir(project)?;
        let (path, page) = (path.clone(), page.clone());
        self.pool
            .run(move || {
                if !path.is_root() && dir.symlink_metadata(path.as_str()).is_ok_and(|m| m.is_file()) {
                    return Err(DomainError::invalid("path", "is a file, not a folder"));
                }
                let folder = open_folder(&dir, &path)?;
                let (names, more) = listing::page_names(&folder, &page).map_err(|e| io_error(&path, e))?;
                let mut entries = Vec::with_capacity(names.len());
                for name in names {
                    let os_name = listing::os_name(&name);
                    // Gone since it was read: the page is one entry short, never wrong.
                    let Ok(metadata) = folder.symlink_metadata(&os_name) else { continue };
                    let shown = String::from_utf8_lossy(&name).into_owned();
                    entries.push((name, entry_of(shown, &metadata)));
                }
                Ok(FolderEntries { entries, more })
            })
            .await?
    }

    async fn read(&self, project: &Project, path: &ProjectPath) -> Result<FileContent, DomainError> {
        if path.is_root() {
            return Err(DomainError::invalid("path", "is a folder"));
        }
        let dir = self.project_dir(project)?;
        let opened_path = path.clone();
        let (file, version) = self.pool.run(move || open_regular(&dir, opened_path.as_str(), &opened_path)).await??;
        let file = Arc::new(file);
        let etag = self.etags.of(&self.pool, &file, version).await?;
        // The same open file is tagged, then sent: a rename over it changes neither. Each chunk
        // is a job of its own, read when the connection asks for it.
        let (pool, path) = (self.pool.clone(), path.clone());
        let body = futures_util::stream::unfold((file, 0u64), move |(file, offset)| {
            let (pool, path) = (pool.clone(), path.clone());
            async move {
                if offset >= version.size {
                    return None;
                }
                let want = CHUNK.min(usize::try_from(version.size - offset).unwrap_or(CHUNK));
                let reader = file.clone();
                let read = pool
                    .run(move || {
                        let mut buf = vec![0; want];
                        let read = reader.read_at(&mut buf, offset)?;
                        buf.truncate(read);
                        Ok(buf)
                    })
                    .await
                    .and_then(|read: io::Result<Vec<u8>>| read.map_err(|e| io_error(&path, e)));
                match read {
                    // Shorter than it was: the bytes it had are all there is to send.
                    Ok(buf) if buf.is_empty() => None,
                    Ok(buf) => {
                        let next = offset + buf.len() as u64;
                        Some((Ok(Bytes::from(buf)), (file, next)))
                    }
                    Err(error) => Some((Err(error), (file, u64::MAX))),
                }
            }
        })
        .boxed();
        Ok(FileContent { size: version.size, etag, body })
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
        let (own_scratch, opened_path) = (self.scratch.clone(), path.clone());
        let (folder, scratch, temporary, file) = self
            .pool
            .run(move || -> Result<_, DomainError> {
                let path = &opened_path;
                // A part that exists but is no folder here (a symlink, a file) is refused by the
                // open below, with the reason: outside the project, or not a folder.
                if !parent.is_empty()
                    && let Err(error) = dir.create_dir_all(&parent)
                    && error.kind() != io::ErrorKind::AlreadyExists
                {
                    return Err(io_error(path, error));
                }
                let folder = parent_folder(dir, &parent, path)?;
                let scratch = own_scratch.for_folder(&folder).map_err(|e| io_error(path, e))?;
                let temporary = scratch_name("upload");
                let file = scratch
                    .open_with(&temporary, OpenOptions::new().write(true).create_new(true))
                    .map_err(|e| io_error(path, e))?
                    .into_std();
                Ok((folder, scratch, temporary, file))
            })
            .await??;
        let (folder, file) = (Arc::new(folder), Arc::new(file));
        let stored = self.store(path, &name, &mut body, &rules, project, &folder, &scratch, &temporary, &file).await;
        if stored.is_err() {
            let (scratch, temporary) = (scratch.clone(), temporary.clone());
            let _ = self.pool.run(move || scratch.remove_file(&temporary)).await;
        }
        stored
    }

    async fn delete(
        &self,
        project: &Project,
        path: &ProjectPath,
        recursive: bool,
        if_match: Option<&IfMatch>,
    ) -> Result<(), DomainError> {
        let Some((parent, name)) = path.split().map(|(p, n)| (p.to_owned(), n.to_owned())) else {
            return Err(DomainError::invalid("path", "is the project's folder"));
        };
        // A file to match is tagged first (a hash may take a while); under the path's lock only
        // its identity is compared again before it goes, as a write does.
        let expected = match if_match {
            Some(IfMatch::Tag(tag)) => Some(self.version_tagged(project, &parent, &name, path, tag).await?),
            None | Some(IfMatch::Any) => None,
        };
        let dir = self.project_dir(project)?;
        let (own_scratch, path) = (self.scratch.clone(), path.clone());
        let (locks, lock) = (self.path_locks.clone(), self.path_lock(project, &path));
        let removal = self
            .pool
            .run(move || -> Result<Option<(Removal, Arc<Dir>)>, DomainError> {
                let folder = parent_folder(dir, &parent, &path)?;
                let metadata = folder.symlink_metadata(&name).map_err(|e| io_error(&path, e))?;
                if let Some(version) = expected {
                    let _removing = locks[lock].lock().unwrap_or_else(|p| p.into_inner());
                    if target_of(&folder, &name, &path).ok().and_then(|(now, _)| now.version()) != Some(version) {
                        return Err(DomainError::PreconditionFailed("the file changed since it was read".into()));
                    }
                    folder.remove_file(&name).map_err(|e| io_error(&path, e))?;
                    return Ok(None);
                }
                if !metadata.is_dir() {
                    folder.remove_file(&name).map_err(|e| io_error(&path, e))?;
                    return Ok(None);
                }
                if !recursive {
                    return Err(DomainError::invalid("path", "is a folder: delete it with recursive=true"));
                }
                let scratch = own_scratch.for_folder(&folder).map_err(|e| io_error(&path, e))?;
                let removal = Removal::begin(&folder, &name, &scratch).map_err(|e| io_error(&path, e))?;
                Ok(Some((removal, scratch)))
            })
            .await??;
        // The folder has left the project; what it held goes in the background, a slice a job.
        if let Some((removal, scratch)) = removal {
            tokio::spawn(finish_removal(self.pool.clone(), removal, scratch));
        }
        Ok(())
    }
}

impl LocalFiles {
    /// The version of the file at `parent`/`name` if its ETag is `tag`; `PreconditionFailed`
    /// if it is not, or is no file (a folder or nothing has no ETag to match).
    async fn version_tagged(
        &self,
        project: &Project,
        parent: &str,
        name: &str,
        path: &ProjectPath,
        tag: &str,
    ) -> Result<Version, DomainError> {
        let differs = || DomainError::PreconditionFailed("the file's ETag differs from If-Match".into());
        let dir = self.project_dir(project)?;
        let (parent, name, looked_up) = (parent.to_owned(), name.to_owned(), path.clone());
        let looked =
            self.pool.run(move || target_of(&parent_folder(dir, &parent, &looked_up)?, &name, &looked_up)).await?;
        match looked {
            Ok((Target::File(version), Some(opened))) => {
                let etag = self.etags.of(&self.pool, &Arc::new(opened), version).await?;
                if etag == tag { Ok(version) } else { Err(differs()) }
            }
            Ok(_) | Err(DomainError::Validation(_)) => Err(differs()),
            Err(error) => Err(error),
        }
    }

    /// Streams `body` into the temporary file, then, if `rules` allow, renames it over `name`.
    #[allow(clippy::too_many_arguments)]
    async fn store(
        &self,
        path: &ProjectPath,
        name: &str,
        body: &mut ByteStream,
        rules: &WriteRules,
        project: &Project,
        folder: &Arc<Dir>,
        scratch: &Arc<Dir>,
        temporary: &str,
        file: &Arc<std::fs::File>,
    ) -> Result<WrittenFile, DomainError> {
        let mut hash = Sha256::new();
        let mut size = 0u64;
        let mut pending = BytesMut::new();
        let mut written = 0u64;
        loop {
            let chunk = body.next().await.transpose()?;
            if let Some(chunk) = &chunk {
                size += chunk.len() as u64;
                if size > rules.max_bytes {
                    return Err(file_too_large(rules.max_bytes));
                }
                pending.extend_from_slice(chunk);
            }
            if pending.len() >= CHUNK || (chunk.is_none() && !pending.is_empty()) {
                let (writer, bytes, at) = (file.clone(), pending.split().freeze(), written);
                written += bytes.len() as u64;
                let written_path = path.clone();
                hash = self
                    .pool
                    .run(move || -> Result<Sha256, DomainError> {
                        writer.write_all_at(&bytes, at).map_err(|e| io_error(&written_path, e))?;
                        hash.update(&bytes);
                        Ok(hash)
                    })
                    .await??;
            }
            if chunk.is_none() {
                break;
            }
        }
        // The old version is tagged before the lock (a hash may take a while); under the lock
        // only its identity is compared again.
        let (looked, name_owned, lookup_path) = (folder.clone(), name.to_owned(), path.clone());
        let (before, opened) = self.pool.run(move || target_of(&looked, &name_owned, &lookup_path)).await??;
        if let Some(expected) = &rules.if_match {
            let matches = match (expected, &before, opened) {
                (IfMatch::Any, Target::File(_), _) => true,
                (IfMatch::Tag(tag), Target::File(version), Some(opened)) => {
                    *tag == self.etags.of(&self.pool, &Arc::new(opened), *version).await?
                }
                _ => false,
            };
            if !matches {
                return Err(DomainError::PreconditionFailed("the file's ETag differs from If-Match".into()));
            }
        }
        let lock = self.path_lock(project, path);
        let (locks, folder, scratch, file) = (self.path_locks.clone(), folder.clone(), scratch.clone(), file.clone());
        let (name, temporary, renamed_path, checked) =
            (name.to_owned(), temporary.to_owned(), path.clone(), rules.if_match.is_some());
        let after = self
            .pool
            .run(move || -> Result<(bool, Version), DomainError> {
                let path = &renamed_path;
                file.sync_all().map_err(|e| io_error(path, e))?;
                let _replacing = locks[lock].lock().unwrap_or_else(|p| p.into_inner());
                let (now, _) = target_of(&folder, &name, path)?;
                if checked && now.version() != before.version() {
                    return Err(DomainError::PreconditionFailed("the file changed while it was written".into()));
                }
                scratch.rename(&temporary, &folder, &name).map_err(|e| io_error(path, e))?;
                let metadata = file.metadata().map_err(|e| io_error(path, e))?;
                Ok((matches!(now, Target::Missing), Version::of(&metadata)))
            })
            .await??;
        let (created, version) = after;
        let sha256 = hex(&hash.finalize());
        let etag = self.etags.written(version, sha256.clone()).await;
        Ok(WrittenFile { path: path.display(), size, sha256, etag, created })
    }
}
