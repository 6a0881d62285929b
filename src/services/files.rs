//! The file API's rules: which project, which path, the size limit and `If-Match`, and an audit
//! row for every write and delete (refused ones too). Where the bytes go is the executor's
//! `ProjectFiles`.

use std::sync::Arc;

use super::{AuditService, ProjectService};
use crate::{
    domain::{
        AuditOutcome, Caller, DomainError, FileListing, FolderPage, IfMatch, ProjectId, ProjectPath, WrittenFile,
    },
    ports::{ByteStream, FileContent, ProjectFiles, WriteRules},
};

pub struct FileService {
    projects: Arc<ProjectService>,
    files: Arc<dyn ProjectFiles>,
    audit: Arc<AuditService>,
    max_bytes: u64,
}

impl FileService {
    pub fn new(
        projects: Arc<ProjectService>,
        files: Arc<dyn ProjectFiles>,
        audit: Arc<AuditService>,
        max_bytes: u64,
    ) -> Self {
        Self { projects, files, audit, max_bytes }
    }

    pub async fn list(
        &self,
        project_id: &ProjectId,
        path: Option<&str>,
        limit: Option<usize>,
        cursor: Option<&str>,
    ) -> Result<FileListing, DomainError> {
        let path = ProjectPath::parse(path.unwrap_or(""))?;
        let page = FolderPage::parse(limit, cursor)?;
        let project = self.projects.get(project_id).await?;
        let listed = self.files.list(&project, &path, &page).await?;
        let next_cursor =
            if listed.more { listed.entries.last().map(|(name, _)| FolderPage::cursor_after(name)) } else { None };
        Ok(FileListing {
            path: path.display(),
            entries: listed.entries.into_iter().map(|(_, e)| e).collect(),
            next_cursor,
        })
    }

    pub async fn read(&self, project_id: &ProjectId, path: &str) -> Result<FileContent, DomainError> {
        let path = ProjectPath::parse(path)?;
        let project = self.projects.get(project_id).await?;
        self.files.read(&project, &path).await
    }

    pub async fn write(
        &self,
        caller: &Caller,
        project_id: &ProjectId,
        path: &str,
        body: ByteStream,
        if_match: Option<&str>,
        length: Option<u64>,
    ) -> Result<WrittenFile, DomainError> {
        let what = format!("PUT file {path}");
        let written = async {
            let path = changeable(path)?;
            let if_match = if_match.map(IfMatch::parse).transpose()?;
            let project = self.projects.get(project_id).await?;
            let rules = WriteRules { max_bytes: self.max_bytes, if_match, length };
            self.files.write(&project, &path, body, rules).await
        }
        .await;
        let described = match &written {
            Ok(file) => format!("{what} ({} bytes, sha256 {})", file.size, file.sha256),
            Err(_) => what,
        };
        self.audit
            .record_file_change(caller, project_id, &described, outcome(&written), refusal(&written).as_deref())
            .await?;
        written
    }

    pub async fn delete(
        &self,
        caller: &Caller,
        project_id: &ProjectId,
        path: &str,
        recursive: bool,
        if_match: Option<&str>,
    ) -> Result<(), DomainError> {
        let deleted = async {
            let path = changeable(path)?;
            let if_match = if_match.map(IfMatch::parse).transpose()?;
            let project = self.projects.get(project_id).await?;
            self.files.delete(&project, &path, recursive, if_match.as_ref()).await
        }
        .await;
        let what = if recursive { format!("DELETE files {path} (recursive)") } else { format!("DELETE file {path}") };
        self.audit
            .record_file_change(caller, project_id, &what, outcome(&deleted), refusal(&deleted).as_deref())
            .await?;
        deleted
    }
}

/// A path a write or a delete may name: anything inside the project but its own folder.
fn changeable(path: &str) -> Result<ProjectPath, DomainError> {
    let path = ProjectPath::parse(path)?;
    if path.is_root() {
        return Err(DomainError::invalid("path", "is the project's folder"));
    }
    Ok(path)
}

/// Why a change was refused, for its audit entry; `None` if it was not (a failure on the way is
/// the log's to explain, not the audit's).
fn refusal<T>(result: &Result<T, DomainError>) -> Option<String> {
    match result {
        Err(error) if outcome(result) == AuditOutcome::Rejected => Some(error.to_string()),
        _ => None,
    }
}

/// A change that happened is `succeeded`; one refused (bad path, `If-Match`, too large) is
/// `rejected`; one that failed on the way is `error`.
fn outcome<T>(result: &Result<T, DomainError>) -> AuditOutcome {
    match result {
        Ok(_) => AuditOutcome::Succeeded,
        Err(DomainError::Internal(_) | DomainError::ExecutorUnavailable { .. } | DomainError::Unavailable(_)) => {
            AuditOutcome::Error
        }
        Err(_) => AuditOutcome::Rejected,
    }
}
