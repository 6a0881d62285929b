//! The audit log's storage.

use async_trait::async_trait;

use crate::domain::{AuditEntry, AuditFilter, DomainError, OutboxEvent, Page, PageRequest};

#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Durably stores one entry before returning: callers answer "success" only after this.
    /// `event` (a command run now that finished) goes into the webhook outbox in the same
    /// transaction, so the entry and the event exist together or not at all.
    async fn record(&self, entry: &AuditEntry, event: Option<&OutboxEvent>) -> Result<(), DomainError>;

    /// Entries matching `filter`, newest first.
    async fn list(&self, filter: &AuditFilter, page: &PageRequest) -> Result<Page<AuditEntry>, DomainError>;

    /// Deletes entries recorded before `before`, in batches that never hold a lock for long.
    /// Returns how many.
    async fn purge(&self, before: chrono::DateTime<chrono::Utc>) -> Result<u64, DomainError>;
}
