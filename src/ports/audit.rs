//! The audit log's storage.

use async_trait::async_trait;

use crate::domain::{AuditEntry, AuditFilter, DomainError, Page, PageRequest};

#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Durably stores one entry before returning: callers answer "success" only after this.
    async fn record(&self, entry: &AuditEntry) -> Result<(), DomainError>;

    /// Entries matching `filter`, newest first.
    async fn list(&self, filter: &AuditFilter, page: &PageRequest) -> Result<Page<AuditEntry>, DomainError>;
}
