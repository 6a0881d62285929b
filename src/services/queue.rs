//! Enqueueing, reading and cancelling queued commands.

use std::{sync::Arc, time::Duration};

use uuid::Uuid;

use super::{AuditService, ProjectService, worker::RunningCommands};
use crate::{
    domain::{
        Caller, Command, CommandDefaults, CommandFilter, CommandOrigin, CommandReader, DomainError, EnqueueRequest,
        Page, PageRequest, ProjectId, Quota, Quotas,
    },
    ports::{CancelEffect, Clock, CommandQueue, Recovered},
};

/// How long a cancel of a running command waits to report it stopped, polling at `CANCEL_POLL`.
const CANCEL_WAIT: Duration = Duration::from_secs(10);
const CANCEL_POLL: Duration = Duration::from_millis(50);
/// How often a cancel asks again when the command moved between queued and running meanwhile.
const MAX_CANCEL_TRIES: u32 = 3;

pub struct QueueService {
    queue: Arc<dyn CommandQueue>,
    projects: Arc<ProjectService>,
    audit: Arc<AuditService>,
    running: Arc<RunningCommands>,
    clock: Arc<dyn Clock>,
    defaults: CommandDefaults,
}

/// What a cancel request achieved.
pub enum Cancelled {
    /// The command is cancelled now.
    Done(Command),
    /// Its worker was asked to stop it and has not confirmed yet.
    Pending(Command),
}

impl QueueService {
    pub fn new(
        queue: Arc<dyn CommandQueue>,
        projects: Arc<ProjectService>,
        audit: Arc<AuditService>,
        running: Arc<RunningCommands>,
        clock: Arc<dyn Clock>,
        defaults: CommandDefaults,
    ) -> Self {
        Self { queue, projects, audit, running, clock, defaults }
    }

    /// Takes back the commands of workers whose leases ran out (their replica died). Every
    /// started one was an execution, so each gets its audit entry, written with its new state.
    pub async fn recover_expired(&self) -> Result<Vec<Recovered>, DomainError> {
        let audit = |recovered: &Recovered| self.audit.recovery_entry(recovered);
        let recovered = self.queue.recover_expired(self.clock.now(), &audit).await?;
        for one in &recovered {
            match one {
                Recovered::Retried(c) => {
                    tracing::warn!(command.id = %c.id, attempts = c.attempts, "command's worker lost; queued again")
                }
                Recovered::Lost(c) => tracing::warn!(command.id = %c.id, "command lost with its worker"),
            }
        }
        Ok(recovered)
    }

    /// Cancels the queued commands of keys revoked or expired by now, and has the workers of
    /// their running ones (on any replica) kill them. Returns how many it changed.
    pub async fn cancel_work_of_unusable_keys(&self) -> Result<u64, DomainError> {
        self.queue.cancel_of_unusable_keys(self.clock.now()).await
    }

    /// Validates and persists a command for the workers; the project must exist now, and the
    /// caller's key have fewer commands queued or running than its `commands` quota. (Counted
    /// before the insert: requests of one key racing each other may pass it by a few.)
    pub async fn enqueue(
        &self,
        caller: Caller,
        project_id: &ProjectId,
        request: EnqueueRequest,
        quotas: Quotas,
    ) -> Result<Command, DomainError> {
        let key = caller.api_key_id;
        let command = Command::new(request, project_id.clone(), caller, self.defaults, self.clock.now())?;
        self.projects.get(project_id).await?;
        if let Some(key) = key {
            quotas.admit(Quota::Commands, self.queue.active_of_key(key).await?)?;
        }
        self.queue.enqueue(&command).await?;
        Ok(command)
    }

    /// Command `id`, if `reader` may read it (404 otherwise, as if it did not exist).
    pub async fn get(&self, id: Uuid, reader: CommandReader) -> Result<Command, DomainError> {
        self.queue
            .get(id)
            .await?
            .filter(|command| reader.may_read(command))
            .ok_or_else(|| DomainError::not_found("command", id.to_string()))
    }

    pub async fn list(&self, filter: &CommandFilter, page: &PageRequest) -> Result<Page<Command>, DomainError> {
        self.queue.list(filter, page).await
    }

    /// Queued: cancelled at once. Running: its worker, on whichever replica, is asked to kill it;
    /// this waits a little for that to happen. Finished: `Conflict`.
    pub async fn cancel(&self, id: Uuid, reader: CommandReader) -> Result<Cancelled, DomainError> {
        let found = self.get(id, reader).await?;
        if found.origin == CommandOrigin::Shell && !found.status.is_final() {
            // Its client holds it: it stops when that request ends or is dropped.
            return Err(DomainError::Conflict("a command run now by /shell stops when its request is closed".into()));
        }
        let mut tries = 0;
        let command = loop {
            let (command, effect) = self
                .queue
                .cancel(id, self.clock.now())
                .await?
                .ok_or_else(|| DomainError::not_found("command", id.to_string()))?;
            match effect {
                CancelEffect::Cancelled => return Ok(Cancelled::Done(command)),
                CancelEffect::Requested => break command,
                CancelEffect::Unchanged if command.status.is_final() => {
                    return Err(DomainError::Conflict(format!(
                        "command already finished ({})",
                        command.status.as_str()
                    )));
                }
                // Neither queued nor running a moment ago, yet not finished: it moved between the
                // two (a shutdown handed its claim back). Ask again.
                CancelEffect::Unchanged if tries < MAX_CANCEL_TRIES => tries += 1,
                CancelEffect::Unchanged => return Ok(Cancelled::Pending(command)),
            }
        };
        self.running.cancel(id);
        let deadline = tokio::time::Instant::now() + CANCEL_WAIT;
        let mut latest = command;
        while tokio::time::Instant::now() < deadline {
            latest = self.get(id, reader).await?;
            if latest.status.is_final() {
                return Ok(Cancelled::Done(latest));
            }
            tokio::time::sleep(CANCEL_POLL).await;
        }
        Ok(Cancelled::Pending(latest))
    }
}
