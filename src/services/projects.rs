//! Finding projects.

use std::sync::Arc;

use crate::{
    domain::{DomainError, Project, ProjectId},
    ports::ProjectSource,
};

pub struct ProjectService {
    source: Arc<dyn ProjectSource>,
}

impl ProjectService {
    pub fn new(source: Arc<dyn ProjectSource>) -> Self {
        Self { source }
    }

    pub async fn list(&self) -> Result<Vec<Project>, DomainError> {
        self.source.list().await
    }

    /// `NotFound` for a missing project, logged as `project not found` with the id: operators'
    /// runbooks grep for exactly those words.
    pub async fn get(&self, id: &ProjectId) -> Result<Project, DomainError> {
        match self.source.get(id).await? {
            Some(project) => Ok(project),
            None => {
                tracing::warn!(project_id = %id, "project not found");
                Err(DomainError::not_found("project", id.as_str()))
            }
        }
    }
}
