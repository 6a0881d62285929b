//! A project's files, on whichever executor holds them. Every path is opened beneath the
//! project root on the executor itself, so a symlink cannot lead out of it.

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;

use crate::domain::{DomainError, FileEntry, FolderPage, IfMatch, Project, ProjectPath, WrittenFile};

/// Bytes as they stream, in either direction.
pub type ByteStream = BoxStream<'static, Result<Bytes, DomainError>>;

/// A file to send: its size and ETag (unquoted) first, then its bytes.
pub struct FileContent {
    pub size: u64,
    pub etag: String,
    pub body: ByteStream,
}

/// A page of a folder's entries, and whether more follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderEntries {
    /// Sorted by name (byte order), each with its name's raw bytes for the next cursor.
    pub entries: Vec<(Vec<u8>, FileEntry)>,
    pub more: bool,
}

/// What a write must respect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRules {
    /// The most the file may hold (`RDEV_MAX_FILE_BYTES`): past it, `TooLarge` and nothing changed.
    pub max_bytes: u64,
    /// What the file must be now (`If-Match`): else `PreconditionFailed`.
    pub if_match: Option<IfMatch>,
    /// The body's length, when the client said it (`Content-Length`).
    pub length: Option<u64>,
}

#[async_trait]
pub trait ProjectFiles: Send + Sync {
    /// A page of a folder's entries. `NotFound` for no such folder, `Validation` on `path` for a
    /// file or a path leading outside the project.
    async fn list(
        &self,
        project: &Project,
        path: &ProjectPath,
        page: &FolderPage,
    ) -> Result<FolderEntries, DomainError>;

    /// A regular file's bytes. A folder, FIFO, socket or device is `Validation` on `path`,
    /// decided without waiting on it.
    async fn read(&self, project: &Project, path: &ProjectPath) -> Result<FileContent, DomainError>;

    /// Makes `body` the file, creating its folders: all or nothing (a reader sees the old file or
    /// the new one, never part of it; concurrent writers leave one writer's whole content).
    /// `path` is never the project's own folder: `FileService` refuses that first.
    async fn write(
        &self,
        project: &Project,
        path: &ProjectPath,
        body: ByteStream,
        rules: WriteRules,
    ) -> Result<WrittenFile, DomainError>;

    /// Deletes a file (or a symlink itself), or a folder with everything in it when `recursive`;
    /// with `if_match`, only a file of that ETag (`PreconditionFailed` otherwise). `path` is
    /// never the project's own folder, as for `write`.
    async fn delete(
        &self,
        project: &Project,
        path: &ProjectPath,
        recursive: bool,
        if_match: Option<&IfMatch>,
    ) -> Result<(), DomainError>;
}
