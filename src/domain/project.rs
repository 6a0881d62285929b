//! Projects: the development environments commands run in. A project is a folder under the
//! projects directory (local executor) or a labelled pod (Kubernetes executor).

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::DomainError;

/// A project id: what the folder name or the pod's `rdev.orchard9.ai/project-id` label says.
///
/// Restricted to what is valid as both a Kubernetes label value and a single path component,
/// so an id can never name `..` or a nested path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(transparent)]
pub struct ProjectId(String);

impl ProjectId {
    pub const MAX_LEN: usize = 63;

    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        if Self::is_valid(raw) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(DomainError::invalid(
                "id",
                "project ids are 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
            ))
        }
    }

    pub fn is_valid(raw: &str) -> bool {
        let bytes = raw.as_bytes();
        let edge_ok = |b: Option<&u8>| b.is_some_and(u8::is_ascii_alphanumeric);
        !raw.is_empty()
            && raw.len() <= Self::MAX_LEN
            && edge_ok(bytes.first())
            && edge_ok(bytes.last())
            && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ProjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProjectStatus {
    Running,
    Pending,
    Stopped,
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    Local,
    Kubernetes,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Project {
    pub id: ProjectId,
    pub name: String,
    pub status: ProjectStatus,
    pub executor: ExecutorKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    /// Kubernetes: the container commands run in (the pod's `rdev.orchard9.ai/container`
    /// annotation, else its first container). Not part of the API.
    #[serde(skip)]
    pub container: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_folder_and_label_style_ids() {
        for id in ["hello", "a", "my-project_2.0", "A1"] {
            assert!(ProjectId::is_valid(id), "{id}");
        }
    }

    #[test]
    fn rejects_paths_and_edges() {
        for id in ["", "..", ".", "../etc", "a/b", "-a", "a-", ".hidden", "a b", &"x".repeat(64)] {
            assert!(!ProjectId::is_valid(id), "{id}");
        }
    }
}
