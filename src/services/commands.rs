//! Running commands in projects now, with an audit entry for every attempt.

use std::{sync::Arc, time::Duration};

use tokio::sync::Notify;
use uuid::Uuid;

use super::{AuditService, DispatchWake, ProjectService, audit::AuditRecord};
use crate::{
    domain::{
        Caller, CommandEnd, CommandSpec, DomainError, Execution, ExecutorKind, OutboxEvent, Project, ProjectId,
        ShellRequest,
    },
    ports::{Executor, OutputSink},
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
    executor: Arc<dyn Executor>,
    audit: Arc<AuditService>,
    deliveries: DispatchWake,
    default_timeout: Duration,
}

/// A validated command and the project it will run in: everything that can refuse a request has
/// been checked, so a stream can start.
pub struct PreparedShell {
    project: Project,
    spec: CommandSpec,
}

impl CommandService {
    pub fn new(
        projects: Arc<ProjectService>,
        executor: Arc<dyn Executor>,
        audit: Arc<AuditService>,
        deliveries: DispatchWake,
        default_timeout: Duration,
    ) -> Self {
        Self { projects, executor, audit, deliveries, default_timeout }
    }

    /// Checks the request and finds the project. Refusals (validation, unknown project) are
    /// audited by the HTTP layer, which sees every refusal.
    pub async fn prepare(&self, project_id: &ProjectId, request: ShellRequest) -> Result<PreparedShell, DomainError> {
        let spec = CommandSpec::from_request(request, self.default_timeout)?;
        let project = self.projects.get(project_id).await?;
        Ok(PreparedShell { project, spec })
    }

    /// Runs a prepared command, sending its output to `live` as it arrives. `stop` (the client
    /// went away) kills it. The audit entry is written before this returns, so a response that
    /// reports success always has its row.
    pub async fn execute(
        &self,
        caller: &Caller,
        prepared: PreparedShell,
        live: OutputSink,
        stop: Option<Arc<Notify>>,
    ) -> Result<Execution, DomainError> {
        let PreparedShell { project, spec } = prepared;
        let execution_id = Uuid::new_v4();
        let stopped = async {
            match stop {
                Some(stop) => stop.notified().await,
                None => std::future::pending().await,
            }
        };
        let result = tokio::select! {
            result = self.executor.run(&project, &spec, live) => result,
            () = stopped => Err(DomainError::internal(anyhow::anyhow!("the client went away; command killed"))),
        };
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(error @ DomainError::Validation(_)) => return Err(error),
            Err(error) => {
                let end = CommandEnd::Error(error.to_string());
                record_execution(project.executor, &end);
                let record = AuditRecord::of_end(execution_id, &project.id, &spec.command, &end);
                if let Err(audit_error) = self.audit.record(caller, record).await {
                    tracing::error!(error = %audit_error, "could not write audit entry for a failed execution");
                }
                return Err(error);
            }
        };
        let end = CommandEnd::Ran(outcome.clone());
        record_execution(project.executor, &end);
        let record = AuditRecord::of_end(execution_id, &project.id, &spec.command, &end);
        let execution = Execution::new(execution_id, project.id.clone(), spec.command.clone(), outcome);
        let webhook_event = OutboxEvent::for_execution(&execution);
        self.audit.record_with_event(caller, record, webhook_event.as_ref()).await?;
        self.deliveries.wake();
        Ok(execution)
    }
}
