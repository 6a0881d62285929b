//! `ProjectSource` over a folder: each sub-folder whose name is a valid project id is a project.

use std::{
    io,
    path::{Path, PathBuf},
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::{
    domain::{DomainError, ExecutorKind, Project, ProjectId, ProjectStatus},
    ports::ProjectSource,
};

pub struct LocalProjects {
    root: PathBuf,
}

impl LocalProjects {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// On first start (no projects folder yet) creates it with one example project, `hello`,
    /// so a newcomer has something to list and run commands in.
    pub async fn ensure_exists(&self) -> io::Result<()> {
        if tokio::fs::try_exists(&self.root).await? {
            return Ok(());
        }
        let hello = self.root.join("hello");
        tokio::fs::create_dir_all(&hello).await?;
        tokio::fs::write(
            hello.join("README.md"),
            "# hello\n\nAn example project. Every folder next to this one is a project too.\n",
        )
        .await?;
        tracing::info!(path = %self.root.display(), "created the projects folder with the example project hello");
        Ok(())
    }

    async fn project_at(&self, id: ProjectId, path: &Path) -> Option<Project> {
        let metadata = tokio::fs::metadata(path).await.ok().filter(|m| m.is_dir())?;
        let created_at = metadata.created().or_else(|_| metadata.modified()).ok().map(DateTime::<Utc>::from);
        Some(Project {
            name: id.as_str().to_owned(),
            id,
            status: ProjectStatus::Running,
            executor: ExecutorKind::Local,
            namespace: None,
            pod: None,
            created_at,
            container: None,
        })
    }
}

fn io_error(error: io::Error) -> DomainError {
    DomainError::internal(anyhow::Error::new(error).context("reading the projects folder"))
}

#[async_trait]
impl ProjectSource for LocalProjects {
    async fn list(&self) -> Result<Vec<Project>, DomainError> {
        let mut entries = tokio::fs::read_dir(&self.root).await.map_err(io_error)?;
        let mut projects = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(io_error)? {
            let Some(id) = entry.file_name().to_str().and_then(|name| ProjectId::parse(name).ok()) else {
                continue;
            };
            if let Some(project) = self.project_at(id, &entry.path()).await {
                projects.push(project);
            }
        }
        projects.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(projects)
    }

    async fn get(&self, id: &ProjectId) -> Result<Option<Project>, DomainError> {
        Ok(self.project_at(id.clone(), &self.root.join(id.as_str())).await)
    }
}
