//! `AuditLog` in memory: the entries as recorded, with the event each carried.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rdev_api::{
    domain::{AuditEntry, AuditFilter, DomainError, OutboxEvent, Page, PageRequest},
    ports::{AuditLog, RanNow},
};

use super::Watched;

#[derive(Default)]
pub struct MemoryAuditLog {
    pub entries: Watched<Vec<(AuditEntry, Option<OutboxEvent>)>>,
}

impl MemoryAuditLog {
    pub fn recorded(&self) -> Vec<AuditEntry> {
        self.entries.read(|entries| entries.iter().map(|(entry, _)| entry.clone()).collect())
    }
}

#[async_trait]
impl AuditLog for MemoryAuditLog {
    async fn record(&self, entry: &AuditEntry, event: Option<&OutboxEvent>) -> Result<(), DomainError> {
        self.entries.change(|entries| entries.push((entry.clone(), event.cloned())));
        Ok(())
    }

    /// The service tests run no `/shell`: the command row and output are not kept here.
    async fn record_ran_now(
        &self,
        entry: &AuditEntry,
        event: Option<&OutboxEvent>,
        _ran_now: &RanNow,
    ) -> Result<(), DomainError> {
        self.record(entry, event).await
    }

    async fn list(&self, filter: &AuditFilter, page: &PageRequest) -> Result<Page<AuditEntry>, DomainError> {
        let mut rows: Vec<_> = self
            .recorded()
            .into_iter()
            .filter(|e| filter.project_id.is_none() || e.project_id == filter.project_id)
            .filter(|e| filter.api_key_id.is_none() || e.api_key_id == filter.api_key_id)
            .filter(|e| filter.since.is_none_or(|since| e.at >= since) && filter.until.is_none_or(|until| e.at < until))
            .filter(|e| filter.outcome.is_none_or(|outcome| e.outcome == outcome))
            .collect();
        rows.sort_by_key(|e| std::cmp::Reverse((e.at, e.id)));
        Ok(Page::from_rows(rows, page, |e| e.id))
    }

    async fn purge(&self, before: DateTime<Utc>) -> Result<u64, DomainError> {
        Ok(self.entries.change(|entries| {
            let was = entries.len();
            entries.retain(|(entry, _)| entry.at >= before);
            (was - entries.len()) as u64
        }))
    }
}
