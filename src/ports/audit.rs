//! The audit log's storage.

use async_trait::async_trait;

use crate::domain::{
    AuditEntry, AuditFilter, Command, DomainError, OutboxEvent, OutputEntry, Page, PageRequest, SessionEnd,
};

/// What a command run now (`/shell`) leaves besides its audit entry: its command row as it
/// ended, and the entries of its output log not stored yet (all of them, for a short one).
#[derive(Debug, Clone)]
pub struct RanNow {
    pub command: Command,
    pub output: Vec<OutputEntry>,
    /// A session's command: the session's next state, which gives the session back.
    pub session: Option<SessionEnd>,
}

#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Durably stores one entry before returning: callers answer "success" only after this.
    /// `event` (a command run now that finished) goes into the webhook outbox in the same
    /// transaction, so the entry and the event exist together or not at all.
    async fn record(&self, entry: &AuditEntry, event: Option<&OutboxEvent>) -> Result<(), DomainError>;

    /// `record`, with the command row and output of a command run now in the same transaction:
    /// a sync run costs one commit, shared with the others committing at that moment.
    async fn record_ran_now(
        &self,
        entry: &AuditEntry,
        event: Option<&OutboxEvent>,
        ran_now: &RanNow,
    ) -> Result<(), DomainError>;

    /// Entries matching `filter`, newest first.
    async fn list(&self, filter: &AuditFilter, page: &PageRequest) -> Result<Page<AuditEntry>, DomainError>;

    /// Deletes entries recorded before `before`, in batches that never hold a lock for long.
    /// Returns how many.
    async fn purge(&self, before: chrono::DateTime<chrono::Utc>) -> Result<u64, DomainError>;
}
