//! Domain events: a command (run now or queued) finished. The webhook dispatcher will subscribe;
//! until then the events are logged.

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

/// Writes the events to the log, at debug level.
pub struct LogEvents;

#[async_trait]
impl CommandEvents for LogEvents {
    async fn command_finished(&self, event: &CommandFinished) {
        tracing::debug!(id = %event.id, project_id = %event.project_id, status = event.status.as_str(), "command finished");
    }
}
