//! Terminals: where an interactive shell runs (`TerminalHost`, one per executor), and where the
//! single-use tickets that open one from a browser are kept (`TicketStore`, shared by replicas).

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use crate::domain::{DomainError, Project, StoredTicket, TerminalInput, TerminalSize};

/// How many output chunks may wait for a slow client: when they are taken, the host stops
/// reading the terminal, and the shell's writes block in the kernel (back-pressure).
pub const TERMINAL_OUTPUT_BACKLOG: usize = 8;

/// A running terminal. Dropping `input` or `output` ends it: the host kills the shell and
/// everything it started.
pub struct TerminalIo {
    pub input: mpsc::Sender<TerminalInput>,
    /// The terminal's output; it ends (`None`) once the shell has exited and its output is read.
    pub output: mpsc::Receiver<Bytes>,
    /// The shell's exit status, sent after the last output.
    pub exit: oneshot::Receiver<Result<i32, DomainError>>,
}

#[async_trait]
pub trait TerminalHost: Send + Sync {
    /// Starts an interactive shell in `project` on a pseudo-terminal of `size`.
    async fn open(&self, project: &Project, size: TerminalSize) -> Result<TerminalIo, DomainError>;
}

#[async_trait]
pub trait TicketStore: Send + Sync {
    async fn insert(&self, ticket: &StoredTicket) -> Result<(), DomainError>;

    /// Takes the ticket with this hash out of the store, if it has not expired by `now`: a
    /// second use, on any replica, finds nothing.
    async fn take(&self, hash: &str, now: DateTime<Utc>) -> Result<Option<StoredTicket>, DomainError>;

    /// Deletes expired tickets; returns how many.
    async fn purge(&self, now: DateTime<Utc>) -> Result<u64, DomainError>;
}
