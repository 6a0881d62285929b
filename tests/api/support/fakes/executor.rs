//! An `Executor` that runs nothing: `exit N` ends with status N at once, `hang` runs until it is
//! stopped (or its future dropped), `unavailable` fails to start.

use async_trait::async_trait;
use chrono::Utc;
use rdev_api::{
    domain::{CommandSpec, DomainError, ExecOutcome, Project},
    ports::{Executor, KILLED_EXIT, OutputSink, Stop},
};

use super::Watched;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    Started(String),
    /// The run was stopped (or its future dropped) before it ended.
    Stopped(String),
}

#[derive(Default)]
pub struct ScriptedExecutor {
    pub events: Watched<Vec<ExecEvent>>,
}

impl ScriptedExecutor {
    pub async fn wait_for(&self, event: ExecEvent) {
        self.events.wait_until(&format!("{event:?}"), |events| events.contains(&event)).await
    }

    pub fn started(&self) -> usize {
        self.events.read(|events| events.iter().filter(|e| matches!(e, ExecEvent::Started(_))).count())
    }
}

/// Records `Stopped` if dropped while armed.
struct StopGuard<'a>(&'a ScriptedExecutor, Option<String>);

impl Drop for StopGuard<'_> {
    fn drop(&mut self) {
        if let Some(command) = self.1.take() {
            self.0.events.change(|events| events.push(ExecEvent::Stopped(command)));
        }
    }
}

#[async_trait]
impl Executor for ScriptedExecutor {
    async fn run(
        &self,
        _project: &Project,
        spec: &CommandSpec,
        _live: OutputSink,
        stop: &Stop,
    ) -> Result<ExecOutcome, DomainError> {
        let command = spec.command.clone();
        self.events.change(|events| events.push(ExecEvent::Started(command.clone())));
        let mut guard = StopGuard(self, Some(command.clone()));
        let exit_code = match command.as_str() {
            "hang" => {
                stop.cancelled().await;
                KILLED_EXIT
            }
            "unavailable" => {
                guard.1 = None;
                return Err(DomainError::executor_unavailable("the executor is down"));
            }
            other => other.strip_prefix("exit ").and_then(|n| n.parse().ok()).unwrap_or(0),
        };
        if !stop.is_cancelled() {
            guard.1 = None;
        }
        let now = Utc::now();
        Ok(ExecOutcome {
            exit_code,
            stdout: format!("ran {command}\n"),
            stderr: String::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            stdout_omitted: None,
            stderr_omitted: None,
            timed_out: false,
            started_at: now,
            finished_at: now,
            duration_ms: 1,
            shell_state: None,
            error: None,
        })
    }

    async fn check(&self, _project: &Project, _spec: &CommandSpec) -> Result<(), DomainError> {
        Ok(())
    }
}
