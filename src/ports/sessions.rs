//! Sessions' storage, shared by every replica through the database.
//!
//! One command at a time per session: `acquire` takes the session for a command until a lease
//! runs out (past the command's timeout, so a replica that dies frees it), and the command's end
//! gives it back with the session's next state in the transaction that stores the command
//! (`RanNow::session`), or `release` gives it back unchanged when nothing ran.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{DomainError, Page, PageRequest, Session, SessionFilter};

/// What `acquire` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// Taken for the command: the session as the command starts.
    Taken(Session),
    /// Another command holds it.
    Busy,
    /// No such session, or it expired.
    Missing,
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores `session` unless its key already has `most_of_key` live ones at its
    /// `created_at`; whether it did. One statement, so replicas creating at once count each
    /// other's.
    async fn create(&self, session: &Session, most_of_key: u32) -> Result<bool, DomainError>;

    /// The session unless it expired by `now`.
    async fn get(&self, id: Uuid, now: DateTime<Utc>) -> Result<Option<Session>, DomainError>;

    /// Sessions that have not expired by `now`, newest first.
    async fn list(
        &self,
        filter: &SessionFilter,
        page: &PageRequest,
        now: DateTime<Utc>,
    ) -> Result<Page<Session>, DomainError>;

    /// Whether there was one (expired ones count as gone).
    async fn delete(&self, id: Uuid, now: DateTime<Utc>) -> Result<bool, DomainError>;

    /// Takes the session for `command_id` until `lease_until`, when it has not expired and no
    /// other command holds it (or that command's lease ran out).
    async fn acquire(
        &self,
        id: Uuid,
        command_id: Uuid,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Acquired, DomainError>;

    /// Gives the session back unchanged, if `command_id` still holds it.
    async fn release(&self, id: Uuid, command_id: Uuid) -> Result<(), DomainError>;

    /// Deletes sessions that expired before `now` and are not held. Returns how many.
    async fn purge(&self, now: DateTime<Utc>) -> Result<u64, DomainError>;
}
