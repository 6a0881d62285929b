//! An output log in memory: the entries of each command, for the service tests.

use std::{collections::HashMap, sync::Arc};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rdev_api::{
    domain::{DomainError, OutputEntry, Stream, TailSnapshot},
    ports::OutputLog,
};
use tokio::sync::Notify;
use uuid::Uuid;

use super::Watched;

#[derive(Default)]
pub struct MemoryOutputLog {
    pub entries: Watched<HashMap<Uuid, Vec<OutputEntry>>>,
    tails: std::sync::Mutex<HashMap<(Uuid, Stream), TailSnapshot>>,
    changes: Arc<Notify>,
}

#[async_trait]
impl OutputLog for MemoryOutputLog {
    async fn append(&self, command: Uuid, entries: &[OutputEntry]) -> Result<(), DomainError> {
        self.entries.change(|all| all.entry(command).or_default().extend_from_slice(entries));
        self.changes.notify_waiters();
        Ok(())
    }

    async fn after(&self, command: Uuid, after: u64, limit: u32) -> Result<Vec<OutputEntry>, DomainError> {
        Ok(self.entries.read(|all| {
            let of = all.get(&command).map(Vec::as_slice).unwrap_or_default();
            of.iter().filter(|e| e.seq > after).take(limit as usize).cloned().collect()
        }))
    }

    async fn last_seq(&self, command: Uuid) -> Result<u64, DomainError> {
        Ok(self.entries.read(|all| all.get(&command).and_then(|e| e.last()).map_or(0, |e| e.seq)))
    }

    async fn save_tail(&self, command: Uuid, tail: &TailSnapshot) -> Result<(), DomainError> {
        self.tails.lock().unwrap().insert((command, tail.stream), tail.clone());
        Ok(())
    }

    async fn tails(&self, command: Uuid) -> Result<Vec<TailSnapshot>, DomainError> {
        let tails = self.tails.lock().unwrap();
        Ok(tails.iter().filter(|((id, _), _)| *id == command).map(|(_, tail)| tail.clone()).collect())
    }

    async fn announce(&self, _command: Uuid) -> Result<(), DomainError> {
        self.changes.notify_waiters();
        Ok(())
    }

    fn changes(&self, _command: Uuid) -> Arc<Notify> {
        self.changes.clone()
    }

    async fn purge(&self, _before: DateTime<Utc>) -> Result<u64, DomainError> {
        Ok(0)
    }
}
