//! Running commands in projects, with an audit entry for every attempt.

use std::{sync::Arc, time::Duration};

use uuid::Uuid;

use super::{AuditService, ProjectService, audit::AuditRecord};
use crate::{
    domain::{AuditOutcome, Caller, CommandSpec, DomainError, Execution, ExecutorKind, ProjectId, ShellRequest},
    ports::Executor,
    telemetry::metrics::{COMMAND_DURATION_SECONDS, COMMAND_EXECUTIONS_TOTAL},
};

fn record_execution(executor: ExecutorKind, outcome: AuditOutcome, duration_ms: Option<u64>) {
    let executor = match executor {
        ExecutorKind::Local => "local",
        ExecutorKind::Kubernetes => "kubernetes",
    };
    metrics::counter!(COMMAND_EXECUTIONS_TOTAL, "executor" => executor, "outcome" => outcome.as_str()).increment(1);
    if let Some(ms) = duration_ms {
        metrics::histogram!(COMMAND_DURATION_SECONDS, "executor" => executor).record(ms as f64 / 1000.0);
    }
}

pub struct CommandService {
    projects: Arc<ProjectService>,
    executor: Arc<dyn Executor>,
    audit: Arc<AuditService>,
    default_timeout: Duration,
}

impl CommandService {
    pub fn new(
        projects: Arc<ProjectService>,
        executor: Arc<dyn Executor>,
        audit: Arc<AuditService>,
        default_timeout: Duration,
    ) -> Self {
        Self { projects, executor, audit, default_timeout }
    }

    /// Validates and runs a shell command now. The audit entry of the execution is written
    /// before this returns, so a response that reports success always has its row. Refusals
    /// (validation, unknown project) are audited by the HTTP layer, which sees every refusal.
    pub async fn run_shell(
        &self,
        caller: &Caller,
        project_id: &ProjectId,
        request: ShellRequest,
    ) -> Result<Execution, DomainError> {
        let spec = CommandSpec::from_request(request, self.default_timeout)?;
        let project = self.projects.get(project_id).await?;
        let execution_id = Uuid::new_v4();
        let outcome = match self.executor.run(&project, &spec).await {
            Ok(outcome) => outcome,
            Err(error @ DomainError::Validation(_)) => return Err(error),
            Err(error) => {
                record_execution(project.executor, AuditOutcome::Error, None);
                let record = AuditRecord {
                    id: execution_id,
                    project_id: Some(project_id),
                    command: Some(&spec.command),
                    exit_code: None,
                    outcome: AuditOutcome::Error,
                    duration_ms: None,
                };
                if let Err(audit_error) = self.audit.record(caller, record).await {
                    tracing::error!(error = %audit_error, "could not write audit entry for a failed execution");
                }
                return Err(error);
            }
        };
        let record = AuditRecord {
            id: execution_id,
            project_id: Some(project_id),
            command: Some(&spec.command),
            exit_code: Some(outcome.exit_code),
            outcome: AuditOutcome::of_exit(outcome.exit_code, outcome.timed_out),
            duration_ms: Some(outcome.duration_ms),
        };
        record_execution(project.executor, record.outcome, record.duration_ms);
        self.audit.record(caller, record).await?;
        Ok(Execution::new(execution_id, project_id.clone(), spec.command, outcome))
    }
}
