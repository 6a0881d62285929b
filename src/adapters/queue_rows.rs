//! Stored values of the command queue shared by both SQL adapters.

use crate::{
    adapters::db::corrupt,
    domain::{CommandEnd, CommandStatus, DomainError, ProjectId},
};

pub(crate) fn status(raw: String) -> Result<CommandStatus, DomainError> {
    CommandStatus::parse(&raw).ok_or_else(|| corrupt("command status", raw))
}

pub(crate) fn project(raw: String) -> Result<ProjectId, DomainError> {
    ProjectId::parse(&raw).map_err(|e| corrupt("project_id", e))
}

/// The columns a finished command sets, from how it ended.
pub(crate) struct Ending {
    pub status: CommandStatus,
    pub exit_code: Option<i32>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub error: Option<String>,
}

impl Ending {
    pub(crate) fn of(end: &CommandEnd) -> Self {
        match end {
            CommandEnd::Ran(outcome) => Self {
                status: end.status(),
                exit_code: Some(outcome.exit_code),
                stdout: Some(outcome.stdout.clone()),
                stderr: Some(outcome.stderr.clone()),
                stdout_truncated: outcome.stdout_truncated,
                stderr_truncated: outcome.stderr_truncated,
                error: None,
            },
            CommandEnd::Cancelled => Self::without_output(end.status(), None),
            CommandEnd::Error(message) => Self::without_output(end.status(), Some(message.clone())),
        }
    }

    fn without_output(status: CommandStatus, error: Option<String>) -> Self {
        Self {
            status,
            exit_code: None,
            stdout: None,
            stderr: None,
            stdout_truncated: false,
            stderr_truncated: false,
            error,
        }
    }
}
