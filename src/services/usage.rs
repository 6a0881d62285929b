//! Batched `last_used_at`: authenticating a request must not cost a database write, so uses are
//! collected in memory and written in one batch every few seconds (and at shutdown).

use std::{collections::HashMap, sync::Arc};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{
    domain::{ApiKey, DomainError},
    ports::ApiKeyRepo,
};

pub struct UsageTracker {
    repo: Arc<dyn ApiKeyRepo>,
    pending: std::sync::Mutex<HashMap<Uuid, DateTime<Utc>>>,
}

impl UsageTracker {
    pub fn new(repo: Arc<dyn ApiKeyRepo>) -> Self {
        Self { repo, pending: Default::default() }
    }

    pub fn record(&self, id: Uuid, at: DateTime<Utc>) {
        let mut pending = self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = pending.entry(id).or_insert(at);
        *entry = (*entry).max(at);
    }

    /// Shows this replica's not-yet-written uses in what it returns, so a key listed right after
    /// a request already carries it.
    pub fn overlay(&self, key: &mut ApiKey) {
        let pending = self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(at) = pending.get(&key.id) {
            key.last_used_at = Some(key.last_used_at.map_or(*at, |stored| stored.max(*at)));
        }
    }

    /// Writes what was collected. On failure the uses are put back for the next flush.
    pub async fn flush(&self) -> Result<(), DomainError> {
        let batch: Vec<_> = {
            let mut pending = self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            pending.drain().collect()
        };
        if batch.is_empty() {
            return Ok(());
        }
        let result = self.repo.record_usage(&batch).await;
        if result.is_err() {
            for (id, at) in batch {
                self.record(id, at);
            }
        }
        result
    }
}
