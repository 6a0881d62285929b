//! A command's output: live, as it arrives (`OutputSink`), and stored as its log (`OutputLog`).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use uuid::Uuid;

pub use crate::domain::Stream;
use crate::domain::{DomainError, OutputEntry, TailSnapshot};

/// What an executor sends as output arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputChunk {
    /// An entry of the command's output log as it is made: head bytes as they arrive, then,
    /// when the streams end, the gap (if bytes were dropped) and the tail. Head text is split
    /// only on UTF-8 boundaries; invalid bytes are replaced when it is shown.
    Entry(OutputEntry),
    /// A stream's tail as it is now (at most once a second while it grows): not a log entry.
    Tail(TailSnapshot),
}

/// Where an executor sends output as it arrives, besides keeping it; `None` when nobody watches.
/// Unbounded, because what it carries is bounded by the output cap.
pub type OutputSink = Option<tokio::sync::mpsc::UnboundedSender<OutputChunk>>;

/// The stored output log of commands, shared by every replica.
#[async_trait::async_trait]
pub trait OutputLog: Send + Sync {
    /// Stores a batch of `command`'s entries (in `seq` order, after those stored), then wakes
    /// the followers on every replica.
    async fn append(&self, command: Uuid, entries: &[OutputEntry]) -> Result<(), DomainError>;

    /// The entries with a `seq` above `after`, in order, at most `limit`.
    async fn after(&self, command: Uuid, after: u64, limit: u32) -> Result<Vec<OutputEntry>, DomainError>;

    /// The last `seq` stored (0 when none).
    async fn last_seq(&self, command: Uuid) -> Result<u64, DomainError>;

    /// Stores `tail` as the latest of its stream (replacing the one before).
    async fn save_tail(&self, command: Uuid, tail: &TailSnapshot) -> Result<(), DomainError>;

    /// The latest tails stored while the command ran.
    async fn tails(&self, command: Uuid) -> Result<Vec<TailSnapshot>, DomainError>;

    /// Wakes the followers of `command` on every replica without new entries: it has ended.
    async fn announce(&self, command: Uuid) -> Result<(), DomainError>;

    /// Woken (`notify_waiters`) whenever `command`'s log changed or it ended, here or on another
    /// replica; only while someone holds it. Enable a `notified()` before reading, so no wake is
    /// lost.
    fn changes(&self, command: Uuid) -> Arc<Notify>;

    /// Deletes the logs of commands that finished before `before`; how many entries.
    async fn purge(&self, before: DateTime<Utc>) -> Result<u64, DomainError>;
}
