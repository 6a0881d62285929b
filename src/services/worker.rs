//! A queue worker: claims the next command, runs it with a lease it keeps renewing, and records
//! how it ended (audit entry, command row with its webhook event, metrics). `RDEV_QUEUE_WORKERS` run per replica.
//!
//! The queue is shared fairly: a worker passes the keys that already hold their share of this
//! replica's workers (half of them, at least one) as `avoid` to its claim, so while another
//! key's command waits, no key takes more; priority orders the work within a key and among keys
//! under their share. With one worker, the key it just served is the one avoided, so two keys
//! take turns.
//!
//! A command ends when its key may no longer act (revoked, expired): through its `KeyHold` on
//! this replica, and through `cancel_requested`, which the revoking replica sets.
//!
//! Cancellation reaches a running command two ways: directly, when the cancel request lands on
//! this replica (`RunningCommands`), or through the `cancel_requested` flag its lease renewal
//! reads, from any replica. Either way the executor future is dropped, which kills the process
//! group (local) or closes the exec stream (Kubernetes).

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio::sync::{Notify, watch};
use uuid::Uuid;

use super::{
    AuditService, Credential, DispatchWake, KeyWatch, OutputWriter, ProjectService, audit::AuditRecord,
    commands::record_execution,
};
use crate::{
    domain::{Command, CommandEnd, DomainError, ExecutorKind, Unauthenticated},
    ports::{Clock, CommandQueue, Executor, OutputLog, Stop},
    telemetry::metrics::COMMAND_QUEUE_WAIT_SECONDS,
};

/// How often an idle worker looks at the queue even without a notification.
const IDLE_POLL: Duration = Duration::from_secs(5);
/// Longest pause between lease renewals, which is also how fast a cancel from another replica
/// is noticed.
const MAX_RENEW_EVERY: Duration = Duration::from_secs(1);

/// Commands running on this replica, so a cancel arriving here stops them at once, and whose
/// key each runs for, so claims can be fair. A command is counted from its claim on, and this
/// replica's claims take turns (`claims`), so two workers freed together see each other's claim.
#[derive(Default)]
pub struct RunningCommands {
    running: std::sync::Mutex<HashMap<Uuid, Running>>,
    claims: tokio::sync::Mutex<()>,
}

/// A command running here: what stops it, and the key it runs for.
type Running = (Arc<Notify>, Option<Uuid>);

/// A claimed command's place in `RunningCommands`, given back when dropped.
struct Registered<'a> {
    running: &'a RunningCommands,
    id: Uuid,
    signal: Arc<Notify>,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.running.lock().remove(&self.id);
    }
}

impl RunningCommands {
    fn register(&self, id: Uuid, key: Option<Uuid>) -> Registered<'_> {
        let signal = Arc::new(Notify::new());
        self.lock().insert(id, (signal.clone(), key));
        Registered { running: self, id, signal }
    }

    /// Stops the command if it runs here; a no-op otherwise.
    pub fn cancel(&self, id: Uuid) {
        if let Some((signal, _)) = self.lock().get(&id) {
            signal.notify_one();
        }
    }

    /// The keys running at least `share` commands here.
    pub fn keys_at(&self, share: usize) -> Vec<Uuid> {
        let mut counts: HashMap<Uuid, usize> = HashMap::new();
        for key in self.lock().values().filter_map(|(_, key)| *key) {
            *counts.entry(key).or_default() += 1;
        }
        counts.into_iter().filter(|(_, count)| *count >= share).map(|(key, _)| key).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Running>> {
        self.running.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub struct QueueWorker {
    pub name: String,
    pub queue: Arc<dyn CommandQueue>,
    pub projects: Arc<ProjectService>,
    pub executor: Arc<dyn Executor>,
    /// Where each command's output is stored as it runs.
    pub output: Arc<dyn OutputLog>,
    pub audit: Arc<AuditService>,
    /// Wakes this replica's webhook dispatcher once the result (and its event) is stored.
    pub deliveries: DispatchWake,
    pub running: Arc<RunningCommands>,
    /// Ends a command when its key may no longer act.
    pub keys: Arc<KeyWatch>,
    /// How many of this replica's workers make a key's share (`RDEV_QUEUE_WORKERS`).
    pub workers: usize,
    pub clock: Arc<dyn Clock>,
    pub lease: Duration,
}

enum Interrupted {
    /// A cancel asked on this replica.
    Cancelled,
    /// The `cancel_requested` flag, read by the lease renewal: a cancel from another replica,
    /// or that replica's revocation of the key arriving before this one's key watch sees it.
    Flagged,
    ClaimLost,
    KeyEnded(Unauthenticated),
}

impl QueueWorker {
    fn lease_until(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now() + chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::seconds(30))
    }

    /// The keys this worker's claim avoids: those holding their share of the workers, or, for a
    /// lone worker, the key it served last.
    fn avoid(&self, last_key: Option<Uuid>) -> Vec<Uuid> {
        if self.workers <= 1 {
            return last_key.into_iter().collect();
        }
        self.running.keys_at((self.workers / 2).max(1))
    }

    /// Claims the next command fairly (see the module's doc) and counts it as running here.
    async fn claim(&self, last_key: Option<Uuid>) -> Result<Option<(Command, Registered<'_>)>, DomainError> {
        let _turn = self.running.claims.lock().await;
        let avoid = self.avoid(last_key);
        let claimed = self.queue.claim(&self.name, self.lease_until(), self.clock.now(), &avoid).await?;
        Ok(claimed.map(|command| {
            let registered = self.running.register(command.id, command.caller.api_key_id);
            (command, registered)
        }))
    }

    /// Works until `stopping` turns true; a command already running is finished first.
    pub async fn run(self, mut stopping: watch::Receiver<bool>) {
        let mut last_key = None;
        while !*stopping.borrow() {
            match self.claim(last_key).await {
                Ok(Some((command, _registered))) if *stopping.borrow() => {
                    if let Err(error) = self.queue.release(command.id, &self.name).await {
                        tracing::warn!(%error, "could not release a claim at shutdown; its lease will");
                    }
                }
                Ok(Some((command, registered))) => {
                    last_key = command.caller.api_key_id;
                    self.process(command, &registered.signal).await;
                }
                Ok(None) => {
                    tokio::select! {
                        () = self.queue.wait_for_work() => {}
                        () = tokio::time::sleep(IDLE_POLL) => {}
                        _ = stopping.changed() => {}
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, worker = %self.name, "claiming from the queue failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(IDLE_POLL) => {}
                        _ = stopping.changed() => {}
                    }
                }
            }
        }
    }

    #[tracing::instrument(
        name = "queue.command",
        skip_all,
        fields(command.id = %command.id, project.id = %command.project_id, queue.wait_seconds = tracing::field::Empty)
    )]
    async fn process(&self, command: Command, signal: &Notify) {
        let started_at = self.clock.now();
        match self.queue.start(command.id, &self.name, started_at).await {
            Ok(true) => {}
            Ok(false) => return tracing::warn!("claim lost before the command started"),
            Err(error) => return tracing::warn!(%error, "could not mark the command started; its lease will return it"),
        }
        let waited = (started_at - command.created_at).num_milliseconds().max(0) as f64 / 1000.0;
        metrics::histogram!(COMMAND_QUEUE_WAIT_SECONDS).record(waited);
        tracing::Span::current().record("queue.wait_seconds", waited);
        let (end, executor) = match self.projects.get(&command.project_id).await {
            Err(error) => (CommandEnd::Error(error.to_string()), None),
            Ok(project) => {
                let credential = command.caller.api_key_id.map(|key_id| Credential { key_id, hash: None });
                let hold = self.keys.hold(credential.as_ref(), None);
                let spec = command.spec();
                let stop = Stop::new();
                let writer = OutputWriter::start(self.output.clone(), command.id, command.attempts).await;
                let run = self.executor.run(&project, &spec, writer.sink(), &stop);
                let running = async {
                    tokio::pin!(run);
                    let interrupted = tokio::select! {
                        outcome = &mut run => Err(outcome),
                        interrupted = self.keep_lease(command.id) => Ok(interrupted),
                        () = signal.notified() => Ok(Interrupted::Cancelled),
                        why = hold.ended() => Ok(Interrupted::KeyEnded(why)),
                    };
                    match interrupted {
                        Err(Ok(outcome)) => Some(CommandEnd::Ran(outcome)),
                        Err(Err(error)) => Some(CommandEnd::Error(error.to_string())),
                        Ok(interrupted) => {
                            // Killed, and waited for until nothing of it is left.
                            stop.cancel();
                            let _ = run.await;
                            match interrupted {
                                Interrupted::ClaimLost => None,
                                Interrupted::Cancelled => Some(CommandEnd::Cancelled),
                                Interrupted::Flagged => Some(match self.keys.check_now(&hold).await {
                                    Some(why) => CommandEnd::Error(format!("{why}; command killed")),
                                    None => CommandEnd::Cancelled,
                                }),
                                Interrupted::KeyEnded(why) => Some(CommandEnd::Error(format!("{why}; command killed"))),
                            }
                        }
                    }
                };
                // Every entry is stored before the status turns final (the writer ends with
                // the run), so a follower that sees the end has seen everything.
                let (end, _) = tokio::join!(running, writer.write());
                let Some(end) = end else {
                    return tracing::warn!("lease lost while running; another replica has taken over");
                };
                (end, Some(project.executor))
            }
        };
        self.record(&command, executor, end).await;
    }

    /// Renews the lease until the command is cancelled or the claim is lost.
    async fn keep_lease(&self, id: Uuid) -> Interrupted {
        let every = (self.lease / 3).min(MAX_RENEW_EVERY);
        loop {
            tokio::time::sleep(every).await;
            match self.queue.renew(id, &self.name, self.lease_until()).await {
                Ok(Some(false)) => {}
                Ok(Some(true)) => return Interrupted::Flagged,
                Ok(None) => return Interrupted::ClaimLost,
                // A blip: the lease is long enough to try again.
                Err(error) => tracing::warn!(%error, "could not renew a lease"),
            }
        }
    }

    /// Audits, stores, counts and announces how the command ended. The audit entry is stored in
    /// the transaction of the final status, so a client that sees the status can already find
    /// it in `/audit`; if that transaction fails, the entry is written alone (or kept until the
    /// database is back), since the process ran either way.
    /// `executor` is `None` when the command never reached one (its project was not found).
    async fn record(&self, command: &Command, executor: Option<ExecutorKind>, end: CommandEnd) {
        let record = AuditRecord::of_end(command.id, &command.project_id, &command.command, &end);
        let entry = self.audit.entry(&command.caller, record);
        match self.queue.finish(command.id, &self.name, &end, self.clock.now(), &entry).await {
            Ok(Some(_)) => {}
            Ok(None) => return tracing::warn!("claim lost before the result was stored"),
            Err(error) => {
                tracing::error!(%error, "could not store a command's result; its lease will expire");
                return self.audit.record_later(entry).await;
            }
        }
        if let Some(executor) = executor {
            record_execution(executor, &end);
        }
        if let Err(error) = self.output.announce(command.id).await {
            tracing::warn!(%error, "could not wake the followers of a finished command; they poll");
        }
        self.deliveries.wake();
    }
}
