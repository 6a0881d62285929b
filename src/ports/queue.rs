//! The persisted command queue, shared by every replica through the database.
//!
//! A worker `claim`s the next command (highest priority, oldest first) with a lease, marks it
//! `start`ed just before running it, `renew`s the lease while it runs (learning on the way
//! whether someone asked to cancel it), and `finish`es it. A command is claimed by exactly one
//! worker; a lease that runs out (the worker's replica died) is `recover_expired`: unstarted
//! claims go back to the queue, started ones fail with `worker lost` unless attempts remain.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{AuditEntry, Command, CommandEnd, CommandFilter, DomainError, Page, PageRequest};

/// What became of a started command whose lease ran out (its worker is gone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovered {
    /// Attempts remain: it is queued again (its `attempts` count the one that was lost).
    Retried(Command),
    /// No attempt remains, or a cancel was asked: it ended `failed` (or `cancelled`) with the
    /// error `worker lost`.
    Lost(Command),
}

impl Recovered {
    pub fn command(&self) -> &Command {
        match self {
            Recovered::Retried(command) | Recovered::Lost(command) => command,
        }
    }
}

/// The audit entry of each started command a recovery took back, written with its new state.
pub type RecoveryAudit<'a> = &'a (dyn Fn(&Recovered) -> AuditEntry + Sync);

/// What a cancel did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelEffect {
    /// It was queued and is now cancelled.
    Cancelled,
    /// It is running; its worker was asked to stop it.
    Requested,
    /// It was neither queued nor running when asked: nothing changed (the command as it is now
    /// tells why).
    Unchanged,
}

#[async_trait]
pub trait CommandQueue: Send + Sync {
    async fn enqueue(&self, command: &Command) -> Result<(), DomainError>;

    async fn get(&self, id: Uuid) -> Result<Option<Command>, DomainError>;

    /// Stores a command run now (origin `shell`) as it is, held by `worker` until `lease_until`
    /// (past its timeout): should this replica die while it runs, the recovery ends it. Its end
    /// is normally stored with its audit entry (`AuditLog::record_ran_now`).
    async fn store_now(&self, command: &Command, worker: &str, lease_until: DateTime<Utc>) -> Result<(), DomainError>;

    /// Newest first.
    async fn list(&self, filter: &CommandFilter, page: &PageRequest) -> Result<Page<Command>, DomainError>;

    /// How many commands of key `key` are queued or running, on every replica.
    async fn active_of_key(&self, key: Uuid) -> Result<u64, DomainError>;

    /// Takes the next queued command for `worker` until `lease_until`, atomically across
    /// replicas: highest priority, then oldest, of the commands whose key may still act at
    /// `now`. A command of a key in `avoid` (keys holding their share of this replica's
    /// workers) is taken only when no other key's command waits.
    async fn claim(
        &self,
        worker: &str,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
        avoid: &[Uuid],
    ) -> Result<Option<Command>, DomainError>;

    /// Cancels the queued commands of keys revoked or expired at `now` (with the error saying
    /// which), and asks the workers of their running queued commands to stop them. Returns how
    /// many commands it changed.
    async fn cancel_of_unusable_keys(&self, now: DateTime<Utc>) -> Result<u64, DomainError>;

    /// Marks a claimed command as started (one more attempt). `false` if the claim was lost.
    async fn start(&self, id: Uuid, worker: &str, at: DateTime<Utc>) -> Result<bool, DomainError>;

    /// Extends the lease. `Some(cancel_requested)` while the claim holds, `None` once lost.
    async fn renew(&self, id: Uuid, worker: &str, lease_until: DateTime<Utc>) -> Result<Option<bool>, DomainError>;

    /// Records how the command ended and returns it; `None` if the claim was lost meanwhile.
    /// `entry`, its audit entry, goes in the same transaction (one commit a command, not two),
    /// and is stored even when the claim was lost (the process ran), once: an entry with its id
    /// already there is kept.
    async fn finish(
        &self,
        id: Uuid,
        worker: &str,
        end: &CommandEnd,
        at: DateTime<Utc>,
        entry: &AuditEntry,
    ) -> Result<Option<Command>, DomainError>;

    /// Returns an unstarted claim to the queue (shutdown before it ran).
    async fn release(&self, id: Uuid, worker: &str) -> Result<(), DomainError>;

    /// Queued: cancelled at once. Running: marked `cancel_requested` for its worker. Otherwise
    /// nothing. Returns the command as it is afterwards and what the call did; `None` if there is
    /// no such command.
    async fn cancel(&self, id: Uuid, at: DateTime<Utc>) -> Result<Option<(Command, CancelEffect)>, DomainError>;

    /// Deals with leases that ran out before `now`: claims never started go back to the queue
    /// (nothing ran); started ones are `Retried` or `Lost`, and each gets the audit entry
    /// `audit` makes for it, in the same transaction as its new state. Returns those.
    async fn recover_expired(
        &self,
        now: DateTime<Utc>,
        audit: RecoveryAudit<'_>,
    ) -> Result<Vec<Recovered>, DomainError>;

    /// How many commands wait, per priority (priorities with none may be left out).
    async fn depth(&self) -> Result<Vec<(u8, u64)>, DomainError>;

    /// Resolves when new work may have arrived (a notification); callers also poll slowly, as a
    /// notification can be missed.
    async fn wait_for_work(&self);
}
