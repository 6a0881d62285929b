//! Reading the audit log, and writing entries for what services did.

use std::sync::Arc;

use uuid::Uuid;

use crate::{
    domain::{AuditEntry, AuditFilter, AuditOutcome, Caller, DomainError, OutboxEvent, Page, PageRequest, ProjectId},
    ports::{AuditLog, Clock},
};

pub struct AuditService {
    log: Arc<dyn AuditLog>,
    clock: Arc<dyn Clock>,
}

/// What one audited attempt was about; the caller and the time are added by `AuditService`.
#[derive(Debug, Clone)]
pub struct AuditRecord<'a> {
    pub id: Uuid,
    pub project_id: Option<&'a ProjectId>,
    pub command: Option<&'a str>,
    pub exit_code: Option<i32>,
    pub outcome: AuditOutcome,
    pub duration_ms: Option<u64>,
}

impl AuditService {
    pub fn new(log: Arc<dyn AuditLog>, clock: Arc<dyn Clock>) -> Self {
        Self { log, clock }
    }

    pub async fn record(&self, caller: &Caller, record: AuditRecord<'_>) -> Result<(), DomainError> {
        self.record_with_event(caller, record, None).await
    }

    /// Records the entry and, in the same transaction, the webhook event of the command it
    /// describes.
    pub async fn record_with_event(
        &self,
        caller: &Caller,
        record: AuditRecord<'_>,
        event: Option<&OutboxEvent>,
    ) -> Result<(), DomainError> {
        let entry = AuditEntry {
            id: record.id,
            at: self.clock.now(),
            request_id: caller.request_id.clone(),
            api_key_id: caller.api_key_id,
            client_ip: caller.client_ip,
            project_id: record.project_id.cloned(),
            command: record.command.map(str::to_owned),
            exit_code: record.exit_code,
            outcome: record.outcome,
            duration_ms: record.duration_ms,
        };
        self.log.record(&entry, event).await
    }

    /// Records a refused attempt. The refusal is what the client must see, so a failure to write
    /// it is logged rather than returned.
    pub async fn record_rejection(&self, caller: &Caller, project_id: Option<&ProjectId>, command: Option<&str>) {
        let record = AuditRecord {
            id: Uuid::new_v4(),
            project_id,
            command,
            exit_code: None,
            outcome: AuditOutcome::Rejected,
            duration_ms: None,
        };
        if let Err(error) = self.record(caller, record).await {
            tracing::error!(%error, "could not write audit entry for a rejected request");
        }
    }

    pub async fn list(&self, filter: &AuditFilter, page: &PageRequest) -> Result<Page<AuditEntry>, DomainError> {
        self.log.list(filter, page).await
    }
}
