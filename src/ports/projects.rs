//! Where projects come from: folders or labelled pods.

use async_trait::async_trait;

use crate::domain::{DomainError, Project, ProjectId};

#[async_trait]
pub trait ProjectSource: Send + Sync {
    /// Every project, ordered by id.
    async fn list(&self) -> Result<Vec<Project>, DomainError>;

    /// `Ok(None)` when no project has this id.
    async fn get(&self, id: &ProjectId) -> Result<Option<Project>, DomainError>;
}
