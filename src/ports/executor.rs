//! Running a command inside a project.

use async_trait::async_trait;

use super::OutputSink;
use crate::domain::{CommandSpec, DomainError, ExecOutcome, Project};

/// Asks a running command to stop (see `Executor::run`).
pub type Stop = tokio_util::sync::CancellationToken;

/// The exit status a stopped command reports: killed by SIGKILL, as a shell says it.
pub const KILLED_EXIT: i32 = 128 + 9;

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
    /// Stopping: once `stop` is cancelled, the command and everything it started are killed,
    /// and `run` returns when they are gone, with the output so far and exit status 137 (the
    /// caller knows why it stopped). Dropping the future kills them too, without waiting.
    async fn run(
        &self,
        project: &Project,
        spec: &CommandSpec,
        live: OutputSink,
        stop: &Stop,
    ) -> Result<ExecOutcome, DomainError>;

    /// What `run` would refuse before starting a process (`Validation`, e.g. a `workdir` that is
    /// missing or leads out of the project), checked without running the command: a stream
    /// starts only for a command that will run.
    async fn check(&self, project: &Project, spec: &CommandSpec) -> Result<(), DomainError>;
}
