//! Whether the database answers, known without asking it on every request.
//!
//! A database that stops answering would otherwise make every request wait for the pool's
//! acquire timeout (or SQLite's busy timeout) before failing. Instead, the first statement that
//! fails for an outage (a broken or refused connection, a file locked by another process) marks
//! the database down: from then on every statement that needs a connection fails at once with
//! `Unavailable` (503 with `Retry-After`), those already waiting for one give up, and a probe
//! asks the database every `PROBE_EVERY` until it answers again. A pool timeout alone proves
//! nothing (the pool may just be busy), so on Postgres it only asks the probe to look now.

use std::{
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::Notify;

use super::errors::{Failure, classify, db_error};
use crate::{domain::DomainError, ports::StorageStatus, telemetry::metrics::DATABASE_UP};

/// How often a database that is down is asked again.
pub(super) const PROBE_EVERY: Duration = Duration::from_millis(200);

#[derive(Default)]
pub(crate) struct Health {
    down: AtomicBool,
    /// Woken when the database is found down, so statements waiting for a connection stop.
    went_down: Notify,
    /// Woken when the probe should look now (a pool timeout on Postgres).
    look: Notify,
    /// Since when, and why, while down.
    outage: Mutex<Option<(Instant, String)>>,
    /// The pools are closed: the probe stops.
    closed: AtomicBool,
}

impl Health {
    pub(crate) fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Runs `work`, which may wait for a connection: refused at once while the database is
    /// down, abandoned as soon as it is found down, and its failure looked at.
    pub(crate) async fn acquiring<T>(
        &self,
        work: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, DomainError> {
        let went_down = self.went_down.notified();
        tokio::pin!(went_down);
        went_down.as_mut().enable();
        if self.is_down() {
            return Err(self.refusal());
        }
        tokio::select! {
            biased;
            result = work => result.map_err(|error| self.failed(error)),
            () = went_down => Err(self.refusal()),
        }
    }

    /// Looks at a statement's failure (marking the database down when it shows an outage) and
    /// turns it into a `DomainError`.
    pub(crate) fn failed(&self, error: sqlx::Error) -> DomainError {
        match classify(&error) {
            Failure::Outage => self.mark_down(&error.to_string()),
            Failure::Suspect => self.look.notify_one(),
            Failure::Other => {}
        }
        db_error(error)
    }

    fn refusal(&self) -> DomainError {
        DomainError::Unavailable("the database is down (it failed moments ago)".into())
    }

    pub(super) fn mark_down(&self, why: &str) {
        if !self.down.swap(true, Ordering::AcqRel) {
            *self.outage.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), why.to_owned()));
            metrics::gauge!(DATABASE_UP).set(0.0);
            tracing::error!(error = why, "database unavailable: refusing what needs it until it answers again");
        }
        self.went_down.notify_waiters();
    }

    pub(super) fn mark_up(&self) {
        if self.down.swap(false, Ordering::AcqRel) {
            let outage = self.outage.lock().unwrap_or_else(|p| p.into_inner()).take();
            metrics::gauge!(DATABASE_UP).set(1.0);
            let down_for = outage.map(|(since, _)| since.elapsed());
            tracing::info!(?down_for, "database is back");
        }
    }

    /// Stops the probe (the pools are being closed).
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.look.notify_one();
    }

    /// Why the database is down, while it is.
    pub(crate) fn outage(&self) -> Option<String> {
        self.outage.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|(_, why)| why.clone())
    }

    /// Resolves when the probe should run: the database was found down, or a look was asked.
    pub(super) async fn needs_probe(&self) {
        let went_down = self.went_down.notified();
        tokio::pin!(went_down);
        went_down.as_mut().enable();
        if self.is_down() {
            return;
        }
        tokio::select! {
            () = went_down => {}
            () = self.look.notified() => {}
        }
    }
}

impl StorageStatus for Health {
    fn available(&self) -> bool {
        !self.is_down()
    }
}

/// Probes the database whenever `health` asks, every `PROBE_EVERY` until it answers; runs for
/// as long as the process does. `probe` is one attempt, bounded in time.
pub(super) fn watch<P, F>(health: Arc<Health>, probe: P)
where
    P: Fn() -> F + Send + 'static,
    F: Future<Output = Result<(), String>> + Send,
{
    tokio::spawn(async move {
        loop {
            health.needs_probe().await;
            while !health.closed.load(Ordering::Acquire) {
                match probe().await {
                    Ok(()) => {
                        health.mark_up();
                        break;
                    }
                    Err(why) => health.mark_down(&why),
                }
                tokio::time::sleep(PROBE_EVERY).await;
            }
            if health.closed.load(Ordering::Acquire) {
                return;
            }
        }
    });
}
