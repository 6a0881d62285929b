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

/// `GET /projects/{id}/files`: a page of a folder's entries, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FileListing {
    pub path: String,
    pub entries: Vec<FileEntry>,
    /// The `cursor` of the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

/// Which page of a folder to list: at most `limit` entries whose names sort after `after`
/// (byte order). The cursor is the last name of the previous page, base64url-encoded, so any
/// name (not UTF-8, with `&` or `=`) survives a query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderPage {
    pub limit: usize,
    pub after: Option<Vec<u8>>,
}

impl FolderPage {
    pub const DEFAULT_LIMIT: usize = 1000;
    pub const MAX_LIMIT: usize = 1000;

    pub fn parse(limit: Option<usize>, cursor: Option<&str>) -> Result<Self, DomainError> {
        use base64::Engine as _;
        let limit = limit.unwrap_or(Self::DEFAULT_LIMIT);
        if !(1..=Self::MAX_LIMIT).contains(&limit) {
            return Err(DomainError::invalid("limit", format!("must be between 1 and {}", Self::MAX_LIMIT)));
        }
        let after = match cursor {
            None | Some("") => None,
            Some(raw) => Some(
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(raw)
                    .ok()
                    .filter(|name| !name.is_empty() && name.len() <= MAX_PATH_BYTES)
                    .ok_or_else(|| DomainError::invalid("cursor", "must be a next_cursor this API gave"))?,
            ),
        };
        Ok(Self { limit, after })
    }

    /// The cursor that lists what comes after `name`.
    pub fn cursor_after(name: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(name)
    }
}

/// Keeps the entries of one page from a folder read in any order: only the `limit + 1`
/// smallest names after the cursor are held (a max-heap), so memory follows the page, never the
/// folder.
pub struct PageKeeper<T> {
    page: FolderPage,
    smallest: std::collections::BinaryHeap<ByName<T>>,
}

struct ByName<T>(Vec<u8>, T);

impl<T> PartialEq for ByName<T> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl<T> Eq for ByName<T> {}
impl<T> PartialOrd for ByName<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for ByName<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

impl<T> PageKeeper<T> {
    pub fn new(page: FolderPage) -> Self {
        let smallest = std::collections::BinaryHeap::with_capacity(page.limit + 1);
        Self { page, smallest }
    }

    /// Whether an entry named `name` would be kept now (to skip the work of making it).
    pub fn wants(&self, name: &[u8]) -> bool {
        self.page.after.as_deref().is_none_or(|after| name > after)
            && (self.smallest.len() <= self.page.limit
                || self.smallest.peek().is_some_and(|largest| name < &largest.0[..]))
    }

    pub fn offer(&mut self, name: Vec<u8>, item: T) {
        if !self.wants(&name) {
            return;
        }
        if self.smallest.len() > self.page.limit {
            self.smallest.pop();
        }
        self.smallest.push(ByName(name, item));
    }

    /// The page's entries by name, and whether more follow.
    pub fn finish(self) -> (Vec<(Vec<u8>, T)>, bool) {
        let mut kept: Vec<_> =
            self.smallest.into_sorted_vec().into_iter().map(|ByName(name, item)| (name, item)).collect();
        let more = kept.len() > self.page.limit;
        kept.truncate(self.page.limit);
        (kept, more)
    }
}

/// What `If-Match` asks of the file a write replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// `*`: that a file exists.
    Any,
    /// That the file's ETag is this (unquoted hex).
    Tag(String),
}

impl IfMatch {
    /// A quoted ETag as this API gives it, or `*`.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let raw = raw.trim();
        if raw == "*" {
            return Ok(Self::Any);
        }
        let tag = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')).unwrap_or(raw);
        if tag.len() == 64 && tag.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self::Tag(tag.to_ascii_lowercase()))
        } else {
            Err(DomainError::invalid("If-Match", "must be an ETag of this API (a quoted sha256) or *"))
        }
    }
}

/// What `PUT /projects/{id}/files/content` stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct WrittenFile {
    pub path: String,
    pub size: u64,
    /// The sha256 of the bytes stored (hex).
    pub sha256: String,
    /// The file's `ETag` now, unquoted: the sha256 for files up to `RDEV_ETAG_HASH_MAX`, a
    /// digest of the file's identity and times above (see docs/api.md).
    pub etag: String,
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

/// The error for a path that names a FIFO, socket or device: only regular files are read or
/// replaced (reading a FIFO would wait for a writer forever).
pub fn not_a_regular_file() -> DomainError {
    DomainError::invalid("path", "is not a regular file (a FIFO, socket or device)")
}

/// The error for a path that leads outside the project (through a symlink, on the executor).
pub fn path_escapes() -> DomainError {
    DomainError::invalid("path", "must not reach outside the project")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_keeper_holds_the_smallest_names_after_the_cursor() {
        let page = FolderPage::parse(Some(2), Some(&FolderPage::cursor_after(b"b"))).unwrap();
        let mut keeper = PageKeeper::new(page);
        for name in ["e", "a", "d", "b", "c", "f"] {
            keeper.offer(name.as_bytes().to_vec(), name.len());
        }
        let (kept, more) = keeper.finish();
        let names: Vec<&[u8]> = kept.iter().map(|(name, _)| &name[..]).collect();
        assert_eq!((names, more), (vec![&b"c"[..], b"d"], true));
        let mut last = PageKeeper::new(FolderPage::parse(Some(5), None).unwrap());
        last.offer(b"only".to_vec(), ());
        assert!(!last.finish().1);
    }

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

    #[test]
    fn if_match_takes_this_apis_etags() {
        let hash = "a".repeat(64);
        assert_eq!(IfMatch::parse(&format!("\"{hash}\"")).unwrap(), IfMatch::Tag(hash));
        assert_eq!(IfMatch::parse("*").unwrap(), IfMatch::Any);
        assert!(IfMatch::parse("\"abc\"").is_err());
        assert!(IfMatch::parse("W/\"x\"").is_err());
    }

    #[test]
    fn folder_pages_take_any_name_as_cursor() {
        let name = b"a&b=\xff";
        let page = FolderPage::parse(Some(2), Some(&FolderPage::cursor_after(name))).unwrap();
        assert_eq!(page.after.as_deref(), Some(&name[..]));
        assert_eq!(FolderPage::parse(None, None).unwrap().limit, 1000);
        assert!(FolderPage::parse(Some(0), None).is_err());
        assert!(FolderPage::parse(Some(1001), None).is_err());
        assert!(FolderPage::parse(None, Some("!!")).is_err());
    }
}
