//! Running commands in projects now, with an audit entry for every process started.
//!
//! A command runs on a task of its own, not in the request's future: the request going away
//! (a client that disconnects, a stream dropped) stops it through its `RunningShell` handle,
//! and the task still writes its audit entry; at shutdown `stop_all` stops what still runs the
//! same way. Nothing starts while the database is known to be down, since its entry could not
//! be written; one that ends while the database is down keeps its entry for later (see
//! `AuditService::record_execution`) and answers `NotRecorded`, with its result.

use std::{sync::Arc, time::Duration};

use tokio::sync::oneshot;
use tokio_util::{
    sync::{CancellationToken, DropGuard},
    task::TaskTracker,
};
use tracing::Instrument as _;
use uuid::Uuid;

use super::{AuditService, DispatchWake, ProjectService, audit::AuditRecord};
use crate::{
    domain::{
        Caller, CommandDefaults, CommandEnd, CommandSpec, DomainError, Execution, ExecutorKind, OutboxEvent, Project,
        ProjectId, ShellRequest,
    },
    ports::{Executor, OutputSink, Stop, StorageStatus},
    telemetry::metrics::{COMMAND_DURATION_SECONDS, COMMAND_EXECUTIONS_TOTAL},
};

/// Counts one execution in `command_executions_total` (and its run time), for commands run now
/// and queued alike.
pub(crate) fn record_execution(executor: ExecutorKind, end: &CommandEnd) {
    let executor = match executor {
        ExecutorKind::Local => "local",
        ExecutorKind::Kubernetes => "kubernetes",
    };
    metrics::counter!(COMMAND_EXECUTIONS_TOTAL, "executor" => executor, "outcome" => end.label()).increment(1);
    if let Some(ms) = end.duration_ms() {
        metrics::histogram!(COMMAND_DURATION_SECONDS, "executor" => executor).record(ms as f64 / 1000.0);
    }
}

pub struct CommandService {
    projects: Arc<ProjectService>,
    runner: Arc<Runner>,
    storage: Arc<dyn StorageStatus>,
    defaults: CommandDefaults,
    in_flight: TaskTracker,
    shutting_down: CancellationToken,
}

/// What a command's task needs.
struct Runner {
    executor: Arc<dyn Executor>,
    audit: Arc<AuditService>,
    deliveries: DispatchWake,
}

/// A validated command and the project it will run in: everything that can refuse a request has
/// been checked, so a stream can start.
pub struct PreparedShell {
    project: Project,
    spec: CommandSpec,
}

impl PreparedShell {
    /// How long the command may run.
    pub fn timeout(&self) -> Duration {
        self.spec.timeout
    }
}

/// A command started by `CommandService::start`. Dropping it before the command ends stops it.
pub struct RunningShell {
    result: oneshot::Receiver<Result<Execution, DomainError>>,
    _stop_when_dropped: DropGuard,
}

impl RunningShell {
    /// How it ended, once it has, and its audit entry is written (or kept for later).
    pub async fn finished(self) -> Result<Execution, DomainError> {
        let mut this = self;
        (&mut this.result).await.unwrap_or_else(|_| Err(DomainError::internal(anyhow::anyhow!("command task ended"))))
    }
}

/// Why a command was stopped before it ended.
#[derive(Debug, Clone, Copy)]
enum Stopped {
    ClientGone,
    ShuttingDown,
}

impl Stopped {
    /// What the request learns (if anyone still listens): a shutdown is the server's own
    /// unavailability, to be tried again on another replica.
    fn error(self) -> DomainError {
        match self {
            Stopped::ClientGone => DomainError::internal(anyhow::anyhow!(self.reason())),
            Stopped::ShuttingDown => DomainError::ExecutorUnavailable {
                reason: self.reason().into(),
                retry_after: Some(Duration::from_secs(1)),
            },
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Stopped::ClientGone => "the client went away; command killed",
            Stopped::ShuttingDown => "the server shut down; command killed",
        }
    }
}

impl CommandService {
    pub fn new(
        projects: Arc<ProjectService>,
        executor: Arc<dyn Executor>,
        audit: Arc<AuditService>,
        deliveries: DispatchWake,
        storage: Arc<dyn StorageStatus>,
        defaults: CommandDefaults,
    ) -> Self {
        Self {
            projects,
            runner: Arc::new(Runner { executor, audit, deliveries }),
            storage,
            defaults,
            in_flight: TaskTracker::new(),
            shutting_down: CancellationToken::new(),
        }
    }

    /// Checks the request and finds the project. Refusals (validation, unknown project) are
    /// audited by the HTTP layer, which sees every refusal.
    pub async fn prepare(&self, project_id: &ProjectId, request: ShellRequest) -> Result<PreparedShell, DomainError> {
        let spec = CommandSpec::from_request(request, self.defaults)?;
        let project = self.projects.get(project_id).await?;
        if !self.storage.available() {
            return Err(DomainError::Unavailable("the database is down; the command was not started".into()));
        }
        Ok(PreparedShell { project, spec })
    }

    /// `prepare`, plus what the executor checks before it starts a process (the workdir), so
    /// a stream starts only for a command that will run.
    pub async fn prepare_stream(
        &self,
        project_id: &ProjectId,
        request: ShellRequest,
    ) -> Result<PreparedShell, DomainError> {
        let prepared = self.prepare(project_id, request).await?;
        self.runner.executor.check(&prepared.project, &prepared.spec).await?;
        Ok(prepared)
    }

    /// Starts a prepared command on a task of its own, sending its output to `live` as it
    /// arrives.
    pub fn start(&self, caller: Caller, prepared: PreparedShell, live: OutputSink) -> RunningShell {
        let (done, result) = oneshot::channel();
        let client_gone = CancellationToken::new();
        let stopped = {
            let client_gone = client_gone.clone();
            let shutting_down = self.shutting_down.clone();
            async move {
                tokio::select! {
                    () = client_gone.cancelled() => Stopped::ClientGone,
                    () = shutting_down.cancelled() => Stopped::ShuttingDown,
                }
            }
        };
        let runner = self.runner.clone();
        // In the request's span: its trace goes on into the command and the webhook event.
        let task = async move {
            let _ = done.send(runner.run(&caller, prepared, live, stopped).await);
        };
        self.in_flight.spawn(task.instrument(tracing::Span::current()));
        RunningShell { result, _stop_when_dropped: client_gone.drop_guard() }
    }

    /// Stops every command still running (the shutdown grace is over) and waits, at most
    /// `wait`, for each to be killed and audited.
    pub async fn stop_all(&self, wait: Duration) {
        self.shutting_down.cancel();
        self.in_flight.close();
        if tokio::time::timeout(wait, self.in_flight.wait()).await.is_err() {
            tracing::warn!(left = self.in_flight.len(), "commands still being stopped at exit");
        }
    }
}

impl Runner {
    /// Runs the command to its end (or until `stopped`), then audits it. The audit entry is
    /// written before this returns, so an answer that reports success always has its row.
    async fn run(
        &self,
        caller: &Caller,
        prepared: PreparedShell,
        live: OutputSink,
        stopped: impl Future<Output = Stopped>,
    ) -> Result<Execution, DomainError> {
        let PreparedShell { project, spec } = prepared;
        let execution_id = Uuid::new_v4();
        let stop = Stop::new();
        let run = self.executor.run(&project, &spec, live, &stop);
        tokio::pin!(run);
        let result = tokio::select! {
            result = &mut run => result,
            stopped = stopped => {
                tracing::warn!(execution.id = %execution_id, project.id = %project.id, "{}", stopped.reason());
                // Killed, and waited for until nothing of it is left.
                stop.cancel();
                let _ = run.await;
                Err(stopped.error())
            }
        };
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(error @ DomainError::Validation(_)) => return Err(error),
            Err(error) => {
                let end = CommandEnd::Error(error.to_string());
                record_execution(project.executor, &end);
                let record = AuditRecord::of_end(execution_id, &project.id, &spec.command, &end);
                if let Err(audit_error) = self.audit.record_execution(caller, record, None).await {
                    tracing::error!(error = %audit_error, "could not write the audit entry of a failed execution");
                }
                return Err(error);
            }
        };
        let end = CommandEnd::Ran(outcome.clone());
        record_execution(project.executor, &end);
        let record = AuditRecord::of_end(execution_id, &project.id, &spec.command, &end);
        let execution = Execution::new(execution_id, project.id.clone(), spec.command.clone(), outcome);
        let webhook_event = OutboxEvent::for_execution(&execution);
        match self.audit.record_execution(caller, record, webhook_event.as_ref()).await {
            Ok(()) => {
                self.deliveries.wake();
                Ok(execution)
            }
            Err(DomainError::Unavailable(_)) => Err(DomainError::NotRecorded(Box::new(execution))),
            Err(other) => Err(other),
        }
    }
}
