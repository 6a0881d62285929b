//! Domain events: a command (run now or queued) finished. Raised after its final state (and its
//! webhook event, in the outbox) is stored; the webhook dispatcher of this replica listens, so
//! the delivery goes out at once rather than at its next poll.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::domain::{CommandStatus, ProjectId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandFinished {
    /// The queued command's id, or the execution id of a command run now.
    pub id: Uuid,
    pub project_id: ProjectId,
    pub status: CommandStatus,
    pub exit_code: Option<i32>,
    pub queued: bool,
    pub finished_at: DateTime<Utc>,
}

#[async_trait]
pub trait CommandEvents: Send + Sync {
    /// Called once per finished command. Must not fail the command: report problems itself.
    async fn command_finished(&self, event: &CommandFinished);
}
