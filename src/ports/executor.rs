//! Running a command inside a project.

use async_trait::async_trait;

use super::OutputSink;
use crate::domain::{CommandSpec, DomainError, ExecOutcome, Project};

#[async_trait]
pub trait Executor: Send + Sync {
    /// Runs `spec` in `project` and waits for it.
    ///
    /// A command that exits non-zero, or is stopped by `spec.timeout`, is an `Ok` outcome. Errors
    /// are for what prevented running it: `Validation` (e.g. `workdir` does not exist),
    /// `ExecutorUnavailable` (infrastructure down), `Internal`.
    ///
    /// Output is also sent to `live` as it arrives (the part within the cap).
    ///
    /// Cancellation: dropping the future kills the command and everything it started.
    async fn run(&self, project: &Project, spec: &CommandSpec, live: OutputSink) -> Result<ExecOutcome, DomainError>;
}
