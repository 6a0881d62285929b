//! Running commands in projects now, with an audit entry for every process started.
//!
//! A command runs on a task of its own, not in the request's future: the request going away
//! (a client that disconnects, a stream dropped) stops it through its `RunningShell` handle,
//! and the task still writes its audit entry; at shutdown `stop_all` stops what still runs the
//! same way. Nothing starts while the database is known to be down, since its entry could not
//! be written; one that ends while the database is down keeps its entry for later (see
//! `AuditService::record_execution`) and answers `NotRecorded`, with its result.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};

use tokio::sync::oneshot;
use tokio_util::{
    sync::{CancellationToken, DropGuard},
    task::TaskTracker,
};
use tracing::Instrument as _;
use uuid::Uuid;

use super::{
    AuditService, DispatchWake, KeyHold, KeySeat, KeySeats, OpenRun, OutputWriter, ProjectService, audit::AuditRecord,
};
use crate::{
    domain::{
        Caller, Command, CommandDefaults, CommandEnd, CommandSpec, DomainError, Execution, ExecutorKind, OutboxEvent,
        Project, ProjectId, Quota, Quotas, Session, SessionEnd, ShellRequest, ShellState, Unauthenticated,
    },
    ports::{Clock, CommandQueue, Executor, OutputLog, OutputSink, RanNow, SessionStore, Stop, StorageStatus},
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
    /// Commands run now on this replica, by key: what the `commands` quota counts of them.
    running_now: KeySeats,
    shutting_down: CancellationToken,
}

/// How long past its timeout a command run now may take to be stored as ended before the
/// recovery counts its replica as dead (the kill and the last writes take seconds at most).
const LEASE_PAST_TIMEOUT: Duration = Duration::from_secs(60);

/// What a command's task needs.
struct Runner {
    executor: Arc<dyn Executor>,
    audit: Arc<AuditService>,
    deliveries: DispatchWake,
    /// Where a long-running command is stored while it runs, and its output.
    commands: Arc<dyn CommandQueue>,
    /// Where a session's command gives its session back when nothing ran.
    sessions: Arc<dyn SessionStore>,
    output: Arc<dyn OutputLog>,
    clock: Arc<dyn Clock>,
    /// The name this replica's rows are held under.
    replica: String,
}

/// The stores a command run now is kept in, besides the audit log.
pub struct CommandStores {
    pub commands: Arc<dyn CommandQueue>,
    pub sessions: Arc<dyn SessionStore>,
    pub output: Arc<dyn OutputLog>,
    pub clock: Arc<dyn Clock>,
    pub replica: String,
}

/// A validated command and the project it will run in: everything that can refuse a request has
/// been checked, so a stream can start.
pub struct PreparedShell {
    id: Uuid,
    project: Project,
    spec: CommandSpec,
    session: Option<SessionRun>,
}

impl PreparedShell {
    /// The id its command (and execution) will have.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// How long the command may run.
    pub fn timeout(&self) -> Duration {
        self.spec.timeout
    }

    /// The same command, run in a session (whose lease it must hold when it starts).
    pub(super) fn in_session(mut self, run: SessionRun) -> Self {
        self.spec.keep_state = true;
        self.session = Some(run);
        self
    }
}

/// What a session's command needs to leave the session's next state.
pub(super) struct SessionRun {
    /// The session as the command starts.
    pub session: Session,
    /// How long the session lives past its last use.
    pub idle: chrono::Duration,
    /// The request gave its own workdir, for this command only: the session keeps its folder
    /// unless the command went somewhere else.
    pub workdir_override: bool,
}

impl SessionRun {
    /// The session's end: the state the command left (the same when it did not end on its
    /// own), and the session as it is then.
    fn end(
        &self,
        command_id: Uuid,
        spec: &CommandSpec,
        shell: Option<&ShellState>,
        at: DateTime<Utc>,
    ) -> (SessionEnd, Session) {
        let before = self.session.state();
        let mut state = shell.map_or_else(|| before.clone(), |shell| before.after(shell));
        if self.workdir_override && state.workdir == spec.workdir {
            state.workdir = before.workdir;
        }
        let expires_at = at + self.idle;
        let session = Session {
            workdir: state.workdir.clone(),
            env: state.env.clone(),
            last_used_at: at,
            expires_at,
            ..self.session.clone()
        };
        (SessionEnd { session_id: self.session.id, command_id, state, used_at: at, expires_at }, session)
    }
}

/// A command started by `CommandService::start`. Dropping it before the command ends stops it.
pub struct RunningShell {
    result: oneshot::Receiver<Result<(Execution, Option<Session>), DomainError>>,
    _stop_when_dropped: DropGuard,
}

impl RunningShell {
    /// How it ended, once it has, and its audit entry is written (or kept for later).
    pub async fn finished(self) -> Result<Execution, DomainError> {
        self.finished_in_session().await.map(|(execution, _)| execution)
    }

    /// `finished`, with the session the command left (for a session's command).
    pub async fn finished_in_session(self) -> Result<(Execution, Option<Session>), DomainError> {
        let mut this = self;
        (&mut this.result).await.unwrap_or_else(|_| Err(DomainError::internal(anyhow::anyhow!("command task ended"))))
    }
}

/// Why a command was stopped before it ended.
#[derive(Debug, Clone, Copy)]
enum Stopped {
    ClientGone,
    ShuttingDown,
    /// Its key was revoked or expired, or the secret it was started with rotated out.
    KeyEnded(Unauthenticated),
}

impl Stopped {
    /// What the request learns (if anyone still listens): a shutdown is the server's own
    /// unavailability, to be tried again on another replica.
    fn error(self) -> DomainError {
        match self {
            Stopped::ClientGone => DomainError::internal(anyhow::anyhow!(self.reason())),
            Stopped::ShuttingDown => {
                DomainError::ExecutorUnavailable { reason: self.reason(), retry_after: Some(Duration::from_secs(1)) }
            }
            Stopped::KeyEnded(why) => DomainError::Unauthenticated(why),
        }
    }

    /// How the command's record ends: a client that left cancelled it; a shutdown or a key
    /// that may no longer act failed it.
    fn end(self) -> CommandEnd {
        match self {
            Stopped::ClientGone => CommandEnd::Stopped(self.reason()),
            Stopped::ShuttingDown | Stopped::KeyEnded(_) => CommandEnd::Error(self.reason()),
        }
    }

    fn reason(self) -> String {
        match self {
            Stopped::ClientGone => "the client went away; command killed".into(),
            Stopped::ShuttingDown => "the server shut down; command killed".into(),
            Stopped::KeyEnded(why) => format!("{why}; command killed"),
        }
    }
}

/// What a command run now holds of its key: the hold that kills it when the key may no longer
/// act, and its seat in the key's `commands` quota.
pub struct KeyBounds {
    pub hold: KeyHold,
    pub seat: KeySeat,
}

impl CommandService {
    /// A seat in `caller`'s `commands` quota for a command run now on this replica.
    pub fn admit(&self, caller: &Caller, quotas: Quotas) -> Result<KeySeat, DomainError> {
        self.running_now.take(caller.api_key_id, quotas)
    }

    pub fn new(
        projects: Arc<ProjectService>,
        executor: Arc<dyn Executor>,
        audit: Arc<AuditService>,
        deliveries: DispatchWake,
        storage: Arc<dyn StorageStatus>,
        defaults: CommandDefaults,
        stores: CommandStores,
    ) -> Self {
        let CommandStores { commands, sessions, output, clock, replica } = stores;
        Self {
            projects,
            runner: Arc::new(Runner { executor, audit, deliveries, commands, sessions, output, clock, replica }),
            storage,
            defaults,
            in_flight: TaskTracker::new(),
            shutting_down: CancellationToken::new(),
            running_now: KeySeats::new(Quota::Commands),
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
        Ok(PreparedShell { id: Uuid::new_v4(), project, spec, session: None })
    }

    /// What the executor checks before it starts a process (the workdir).
    pub async fn check(&self, prepared: &PreparedShell) -> Result<(), DomainError> {
        self.runner.executor.check(&prepared.project, &prepared.spec).await
    }

    /// `prepare`, plus what the executor checks before it starts a process (the workdir), so
    /// a stream starts only for a command that will run.
    pub async fn prepare_stream(
        &self,
        project_id: &ProjectId,
        request: ShellRequest,
    ) -> Result<PreparedShell, DomainError> {
        let prepared = self.prepare(project_id, request).await?;
        self.check(&prepared).await?;
        Ok(prepared)
    }

    /// Starts a prepared command on a task of its own, sending its output to `live` as it
    /// arrives. It is killed when its key's hold ends (the key may no longer act), and holds
    /// its seat in the key's `commands` quota until it ends.
    pub fn start(&self, caller: Caller, prepared: PreparedShell, live: OutputSink, key: KeyBounds) -> RunningShell {
        let KeyBounds { hold, seat } = key;
        let (done, result) = oneshot::channel();
        let client_gone = CancellationToken::new();
        let stopped = {
            let client_gone = client_gone.clone();
            let shutting_down = self.shutting_down.clone();
            async move {
                tokio::select! {
                    () = client_gone.cancelled() => Stopped::ClientGone,
                    () = shutting_down.cancelled() => Stopped::ShuttingDown,
                    why = hold.ended() => Stopped::KeyEnded(why),
                }
            }
        };
        let runner = self.runner.clone();
        // In the request's span: its trace goes on into the command and the webhook event.
        let task = async move {
            let _ = done.send(runner.run(&caller, prepared, live, stopped).await);
            drop(seat);
        };
        self.in_flight.spawn(task.instrument(tracing::Span::current()));
        RunningShell { result, _stop_when_dropped: client_gone.drop_guard() }
    }

    /// How long past its timeout a command's holds (its row, a session's lease) last.
    pub fn lease_past_timeout(&self) -> Duration {
        LEASE_PAST_TIMEOUT
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
    /// Runs the command to its end (or until `stopped`), then audits it and stores it as a
    /// command (origin `shell`) with its output, in one commit. The audit entry is written
    /// before this returns, so an answer that reports success always has its row.
    async fn run(
        &self,
        caller: &Caller,
        prepared: PreparedShell,
        live: OutputSink,
        stopped: impl Future<Output = Stopped>,
    ) -> Result<(Execution, Option<Session>), DomainError> {
        let PreparedShell { id: execution_id, project, spec, session } = prepared;
        let command = match &session {
            Some(run) => Command::in_session(
                execution_id,
                run.session.id,
                project.id.clone(),
                &spec,
                caller.clone(),
                self.clock.now(),
            ),
            None => Command::ran_now(execution_id, project.id.clone(), &spec, caller.clone(), self.clock.now()),
        };
        let writer = OutputWriter::deferred(self.output.clone(), execution_id, self.open(&command, &spec), live);
        let stop = Stop::new();
        let run = self.executor.run(&project, &spec, writer.sink(), &stop);
        let running = async {
            tokio::pin!(run);
            tokio::select! {
                result = &mut run => Ok(result),
                stopped = stopped => {
                    tracing::warn!(execution.id = %execution_id, project.id = %project.id, "{}", stopped.reason());
                    // Killed, and waited for until nothing of it is left.
                    stop.cancel();
                    let _ = run.await;
                    Err(stopped)
                }
            }
        };
        let (result, unwritten) = tokio::join!(running, writer.write());
        // A stop says how the command ended in its own words; an executor's error is `failed`.
        let result = match result {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(error)) => Err((None, error)),
            Err(stopped) => Err((Some(stopped.end()), stopped.error())),
        };
        let outcome = match result {
            Ok(outcome) => outcome,
            Err((None, error @ DomainError::Validation(_))) => {
                if unwritten.opened {
                    // Nothing ran, but the row was stored while the executor looked: end it.
                    let ended = command.ended(&CommandEnd::Error(error.to_string()), self.clock.now());
                    let _ = self.commands.store_now(&ended, &self.replica, self.clock.now()).await;
                }
                if let Some(run) = &session
                    && let Err(release_error) = self.sessions.release(run.session.id, execution_id).await
                {
                    tracing::warn!(error = %release_error, "could not give a session back; its lease runs out");
                }
                return Err(error);
            }
            Err((stopped, error)) => {
                let end = stopped.unwrap_or_else(|| CommandEnd::Error(error.to_string()));
                record_execution(project.executor, &end);
                let record = AuditRecord::of_end(execution_id, &project.id, &spec.command, &end);
                let session_end = session.as_ref().map(|run| run.end(execution_id, &spec, None, self.clock.now()).0);
                let ran_now = RanNow {
                    command: command.ended(&end, self.clock.now()),
                    output: unwritten.entries,
                    session: session_end,
                };
                if let Err(audit_error) = self.audit.record_execution(caller, record, None, Some(ran_now)).await {
                    tracing::error!(error = %audit_error, "could not write the audit entry of a failed execution");
                }
                self.announce(execution_id, unwritten.opened).await;
                return Err(error);
            }
        };
        let end = CommandEnd::Ran(outcome.clone());
        record_execution(project.executor, &end);
        let record = AuditRecord::of_end(execution_id, &project.id, &spec.command, &end);
        let ended =
            session.as_ref().map(|run| run.end(execution_id, &spec, outcome.shell_state.as_deref(), self.clock.now()));
        let (session_end, session_after) = ended.unzip();
        let ran_now = RanNow {
            command: command.ended(&end, outcome.finished_at),
            output: unwritten.entries,
            session: session_end,
        };
        let execution = Execution::new(execution_id, project.id.clone(), spec.command.clone(), outcome);
        let webhook_event = OutboxEvent::for_execution(&execution);
        let recorded = self.audit.record_execution(caller, record, webhook_event.as_ref(), Some(ran_now)).await;
        self.announce(execution_id, unwritten.opened).await;
        match recorded {
            Ok(()) => {
                self.deliveries.wake();
                Ok((execution, session_after))
            }
            Err(DomainError::Unavailable(_)) => Err(DomainError::NotRecorded(Box::new(execution))),
            Err(other) => Err(other),
        }
    }

    /// What stores the command as running, once it has run long enough to be followed: held by
    /// this replica until past its timeout, so the recovery ends it should the replica die.
    fn open(&self, command: &Command, spec: &CommandSpec) -> OpenRun {
        let (commands, command, worker) = (self.commands.clone(), command.clone(), self.replica.clone());
        let hold = chrono::Duration::from_std(spec.timeout + LEASE_PAST_TIMEOUT).unwrap_or(chrono::Duration::hours(2));
        let lease_until = self.clock.now() + hold;
        Box::new(move || Box::pin(async move { commands.store_now(&command, &worker, lease_until).await }))
    }

    /// Wakes the followers of a command that could be followed while it ran.
    async fn announce(&self, id: Uuid, opened: bool) {
        if opened && let Err(error) = self.output.announce(id).await {
            tracing::warn!(%error, "could not wake the followers of a finished command; they poll");
        }
    }
}
