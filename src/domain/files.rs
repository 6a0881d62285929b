//! The file API's vocabulary: a path inside a project (`ProjectPath`), what a folder lists
//! (`FileEntry`), and what a write did (`WrittenFile`).

use std::path::{Component, Path};

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::DomainError;

pub const MAX_PATH_BYTES: usize = 4096;

/// A path relative to the project root, normalised: no `.`, no `..` (resolved lexically, never
/// above the root), no empty parts. Empty is the root. Whether a symlink on the way leads out is
/// for the executor to refuse, where the path is opened.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProjectPath(String);

impl ProjectPath {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let invalid = |message: &str| DomainError::invalid("path", message);
        if raw.len() > MAX_PATH_BYTES {
            return Err(invalid("is too long"));
        }
        if raw.contains('\0') {
            return Err(invalid("must not contain NUL bytes"));
        }
        if raw.starts_with('/') {
            return Err(invalid("must be relative to the project"));
        }
        let mut parts: Vec<&str> = Vec::new();
        for component in Path::new(raw).components() {
            match component {
                Component::Normal(part) => parts.push(part.to_str().ok_or_else(|| invalid("must be valid UTF-8"))?),
                Component::CurDir => {}
                Component::ParentDir => {
                    parts.pop().ok_or_else(|| invalid("must not reach outside the project"))?;
                }
                Component::RootDir | Component::Prefix(_) => return Err(invalid("must be relative to the project")),
            }
        }
        Ok(Self(parts.join("/")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The folder holding it and its own name; `None` for the root.
    pub fn split(&self) -> Option<(&str, &str)> {
        if self.is_root() {
            return None;
        }
        Some(self.0.rsplit_once('/').unwrap_or(("", &self.0)))
    }

    /// As the API shows it: `.` for the root.
    pub fn display(&self) -> String {
        if self.is_root() { ".".into() } else { self.0.clone() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileType {
    File,
    Dir,
    Symlink,
    Other,
}

/// One entry of a folder, as `GET /projects/{id}/files` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FileEntry {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: FileType,
    /// Bytes (of the link itself, for a symlink).
    pub size: u64,
    /// Permission bits, octal, e.g. `644`.
    pub mode: String,
    pub modified_at: Option<DateTime<Utc>>,
}

/// `GET /projects/{id}/files`: a folder's entries, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FileListing {
    pub path: String,
    pub entries: Vec<FileEntry>,
}

/// What `PUT /projects/{id}/files/content` stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct WrittenFile {
    pub path: String,
    pub size: u64,
    /// Hex; the file's `ETag` is this, quoted.
    pub sha256: String,
    /// Whether there was no file before (201) or one was replaced (200).
    #[serde(skip)]
    pub created: bool,
}

/// The error for a path that does not name a file or folder.
pub fn file_not_found(path: &ProjectPath) -> DomainError {
    DomainError::not_found("file", path.display())
}

/// The error for a file past `RDEV_MAX_FILE_BYTES` (`most`).
pub fn file_too_large(most: u64) -> DomainError {
    DomainError::TooLarge(format!("the file is larger than RDEV_MAX_FILE_BYTES ({most} bytes)"))
}

/// The error for a path that leads outside the project (through a symlink, on the executor).
pub fn path_escapes() -> DomainError {
    DomainError::invalid("path", "must not reach outside the project")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_and_stay_inside() {
        assert_eq!(ProjectPath::parse("a/./b/../c").unwrap().as_str(), "a/c");
        assert_eq!(ProjectPath::parse("").unwrap(), ProjectPath::parse(".").unwrap());
        assert!(ProjectPath::parse("a/..").unwrap().is_root());
        assert!(ProjectPath::parse("../x").is_err());
        assert!(ProjectPath::parse("a/../../x").is_err());
        assert!(ProjectPath::parse("/etc/passwd").is_err());
        assert!(ProjectPath::parse("a\0b").is_err());
        assert_eq!(ProjectPath::parse("d/e/f.txt").unwrap().split(), Some(("d/e", "f.txt")));
        assert_eq!(ProjectPath::parse("f.txt").unwrap().split(), Some(("", "f.txt")));
    }
}
