//! The ETag of each project file rdev last copied, per server, project and path, kept in the
//! config folder so a later upload can send it as `If-Match`: a file someone changed since is
//! refused (412) instead of overwritten. Only tags are kept, never content or keys.

use serde::{Deserialize, Serialize};

use crate::{config, error::Result};

/// Enough for everyday use; the oldest go first.
const KEPT: usize = 2000;
const FILE: &str = "etags.json";

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Etags {
    entries: Vec<Entry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    server: String,
    project: String,
    path: String,
    etag: String,
}

impl Etags {
    pub fn load() -> Self {
        config::dir()
            .ok()
            .and_then(|dir| std::fs::read(dir.join(FILE)).ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    pub fn get(&self, server: &str, project: &str, path: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|entry| entry.server == server && entry.project == project && entry.path == path)
            .map(|entry| entry.etag.as_str())
    }

    pub fn record(&mut self, server: &str, project: &str, path: &str, etag: &str) {
        self.entries.retain(|entry| !(entry.server == server && entry.project == project && entry.path == path));
        self.entries.push(Entry {
            server: server.into(),
            project: project.into(),
            path: path.into(),
            etag: unquoted(etag).into(),
        });
        let excess = self.entries.len().saturating_sub(KEPT);
        self.entries.drain(..excess);
    }

    pub fn save(&self) -> Result<()> {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        config::write_private(FILE, &bytes)
    }
}

pub fn unquoted(etag: &str) -> &str {
    etag.trim().trim_start_matches("W/").trim_matches('"')
}

/// The form `If-Match` takes.
pub fn quoted(etag: &str) -> String {
    format!("\"{}\"", unquoted(etag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_is_kept_per_server_project_and_path_and_replaced_by_a_newer_one() {
        let mut etags = Etags::default();
        etags.record("http://a", "hello", "x", "\"1\"");
        etags.record("http://a", "hello", "x", "2");
        etags.record("http://b", "hello", "x", "3");
        assert_eq!(etags.get("http://a", "hello", "x"), Some("2"));
        assert_eq!(etags.get("http://b", "hello", "x"), Some("3"));
        assert_eq!(etags.get("http://a", "other", "x"), None);
        assert_eq!(quoted("abc"), "\"abc\"");
        assert_eq!(quoted("\"abc\""), "\"abc\"");
    }
}
