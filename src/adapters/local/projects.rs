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

/// The example project's files.
const HELLO_FILES: [(&str, &str); 3] = [
    ("README.md", "# hello\n\nAn example project. Every folder next to this one is a project too.\n"),
    (
        "Makefile",
        "# What the docs' examples build: `make test` takes ten seconds, long enough to watch or cancel.\n\
         all:\n\t@sh src/hello.sh\n\n\
         test:\n\t@for i in 1 2 3 4 5 6 7 8 9 10; do echo \"test $$i of 10 passed\"; sleep 1; done\n\n\
         deploy: all\n\t@echo \"deployed hello\"\n",
    ),
    ("src/hello.sh", "#!/bin/sh\necho \"hello from $(pwd)\"\n"),
];

impl LocalProjects {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// On first start (no projects folder yet) creates it with one example project, `hello`,
    /// so a newcomer has something to list and run commands in, and the docs' examples (a
    /// `make test` to queue and cancel, a `src` folder to list) work as printed.
    pub async fn ensure_exists(&self) -> io::Result<()> {
        if tokio::fs::try_exists(&self.root).await? {
            return Ok(());
        }
        let hello = self.root.join("hello");
        tokio::fs::create_dir_all(hello.join("src")).await?;
        for (path, content) in HELLO_FILES {
            tokio::fs::write(hello.join(path), content).await?;
        }
        tracing::info!(path = %self.root.display(), "created the projects folder with the example project hello");
        Ok(())
    }

    async fn project_at(&self, id: ProjectId, path: &Path) -> Option<Project> {
        let metadata = tokio::fs::metadata(path).await.ok().filter(|m| m.is_dir())?;
        Some(project(id, &metadata))
    }
}

fn project(id: ProjectId, metadata: &std::fs::Metadata) -> Project {
    let created_at = metadata.created().or_else(|_| metadata.modified()).ok().map(DateTime::<Utc>::from);
    Project {
        name: id.as_str().to_owned(),
        id,
        status: ProjectStatus::Running,
        executor: ExecutorKind::Local,
        namespace: None,
        pod: None,
        created_at,
        container: None,
    }
}

/// Every sub-folder of `root` named like a project, sorted by id. Blocking.
fn list_folder(root: &Path) -> io::Result<Vec<Project>> {
    let mut projects = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let Some(id) = entry.file_name().to_str().and_then(|name| ProjectId::parse(name).ok()) else {
            continue;
        };
        // Follows symlinks, as `project_at` does: a linked folder is a project too.
        if let Ok(metadata) = std::fs::metadata(entry.path())
            && metadata.is_dir()
        {
            projects.push(project(id, &metadata));
        }
    }
    projects.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(projects)
}

fn io_error(error: io::Error) -> DomainError {
    DomainError::internal(anyhow::Error::new(error).context("reading the projects folder"))
}

#[async_trait]
impl ProjectSource for LocalProjects {
    /// One trip to the blocking pool for the whole listing, rather than one per entry and per
    /// metadata lookup as `tokio::fs` would make it.
    async fn list(&self) -> Result<Vec<Project>, DomainError> {
        let root = self.root.clone();
        let listed = tokio::task::spawn_blocking(move || list_folder(&root)).await;
        listed.map_err(DomainError::internal)?.map_err(io_error)
    }

    async fn get(&self, id: &ProjectId) -> Result<Option<Project>, DomainError> {
        Ok(self.project_at(id.clone(), &self.root.join(id.as_str())).await)
    }
}
