//! Background upkeep that must not cost requests anything: batched writes, purges, taking back
//! the commands of replicas whose leases ran out, the queue depth gauge, and the metrics
//! registry's own upkeep.

use std::{sync::Arc, time::Duration};

use crate::{
    domain::DomainError,
    ports::{Clock, CommandQueue, DeliveryQueue, OutputLog},
    services::{
        ApiKeyService, AuditService, IdempotencyService, QueueService, RateLimitService, SessionService,
        TerminalService,
    },
};

/// How often the maintenance task writes batched `last_used_at` times and purges old counts.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(5);
/// How often webhook deliveries, audit entries, idempotency keys and output logs past their
/// retention are deleted.
const DELIVERY_PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Background upkeep that must not cost requests anything: batched writes, purges, and taking
/// back the commands of replicas whose leases ran out.
#[derive(Clone)]
pub(super) struct Upkeep {
    pub keys: Arc<ApiKeyService>,
    pub rate_limits: Arc<RateLimitService>,
    pub queue: Arc<dyn CommandQueue>,
    /// Takes back (and audits) the commands of workers whose leases ran out.
    pub recovery: Arc<QueueService>,
    pub deliveries: Arc<dyn DeliveryQueue>,
    pub audit: Arc<AuditService>,
    pub idempotency: Arc<IdempotencyService>,
    pub output: Arc<dyn OutputLog>,
    pub sessions: Arc<SessionService>,
    pub terminals: Arc<TerminalService>,
    pub output_retention: Duration,
    pub webhook_retention: Duration,
    pub audit_retention: Duration,
    pub clock: Arc<dyn Clock>,
}

impl Upkeep {
    pub(super) async fn run(self) {
        let backlog = tokio::spawn(write_audit_backlog(self.audit.clone()));
        let _abort_with_this = AbortOnDrop(backlog);
        let leases = tokio::spawn(return_unused_rate_leases(self.rate_limits.clone()));
        let _abort_this_too = AbortOnDrop(leases);
        publish_queue_depth(self.queue.as_ref()).await;
        // The first full round comes one period after start: nothing is pending to write yet.
        let mut every = tokio::time::interval_at(tokio::time::Instant::now() + MAINTENANCE_EVERY, MAINTENANCE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut purged_deliveries_at: Option<tokio::time::Instant> = None;
        loop {
            every.tick().await;
            if let Err(error) = self.keys.usage().flush().await {
                tracing::warn!(%error, "could not write API key usage; will retry");
            }
            if let Err(error) = self.rate_limits.purge_expired().await {
                tracing::warn!(%error, "could not purge old rate-limit counts; will retry");
            }
            publish_queue_depth(self.queue.as_ref()).await;
            // Histogram samples wait in per-series buckets until drained; a scrape drains them,
            // and this does when nobody scrapes, so their memory does not grow with requests.
            crate::telemetry::metrics::handle().run_upkeep();
            report_purge(self.sessions.purge_expired().await, "expired sessions", "RDEV_SESSION_IDLE_TIMEOUT");
            report_purge(self.terminals.purge_expired_tickets().await, "terminal tickets", "their 30 s");
            if let Err(error) = self.recovery.cancel_work_of_unusable_keys().await {
                tracing::warn!(%error, "could not cancel the commands of revoked or expired keys; will retry");
            }
            if let Err(error) = self.recovery.recover_expired().await {
                tracing::warn!(%error, "could not recover expired command leases; will retry");
            }
            if purged_deliveries_at.is_none_or(|at| at.elapsed() >= DELIVERY_PURGE_EVERY) {
                purged_deliveries_at = Some(tokio::time::Instant::now());
                self.purge_old_deliveries().await;
                self.purge_old_audit_entries().await;
                self.purge_old_idempotency_keys().await;
                self.purge_old_output().await;
            }
        }
    }

    async fn purge_old_audit_entries(&self) {
        let purged = self.audit.purge_older_than(self.audit_retention).await;
        report_purge(purged, "audit entries", "RDEV_AUDIT_RETENTION");
    }

    async fn purge_old_idempotency_keys(&self) {
        report_purge(self.idempotency.purge().await, "Idempotency-Keys", "24 h");
    }

    async fn purge_old_output(&self) {
        let purged = self.output.purge(self.older_than(self.output_retention)).await;
        report_purge(purged, "command output", "RDEV_OUTPUT_RETENTION");
    }

    async fn purge_old_deliveries(&self) {
        let purged = self.deliveries.purge(self.older_than(self.webhook_retention)).await;
        report_purge(purged, "webhook deliveries", "RDEV_WEBHOOK_RETENTION");
    }

    /// The moment `retention` ago.
    fn older_than(&self, retention: Duration) -> chrono::DateTime<chrono::Utc> {
        self.clock.now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX)
    }
}

/// Logs what an hourly purge did: how many rows of `what` older than `age` it deleted, if any,
/// or that it failed (the next round tries again).
fn report_purge(purged: Result<u64, DomainError>, what: &str, age: &str) {
    match purged {
        Ok(0) => {}
        Ok(purged) => tracing::info!(purged, "deleted {what} older than {age}"),
        Err(error) => tracing::warn!(%error, "could not purge old {what}; will retry"),
    }
}

/// Gives back, each second, the rate-limit budget this replica leased for a second that is
/// over and did not use (a key that went quiet), so it counts only while it could be used.
async fn return_unused_rate_leases(rate_limits: Arc<RateLimitService>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        rate_limits.return_unused().await;
    }
}

/// How often audit entries kept while the database was down are tried again.
const AUDIT_BACKLOG_EVERY: Duration = Duration::from_millis(250);

/// Writes the audit entries kept while the database was down, soon after it answers again.
async fn write_audit_backlog(audit: Arc<AuditService>) {
    loop {
        tokio::time::sleep(AUDIT_BACKLOG_EVERY).await;
        if audit.backlog_len() > 0 {
            let written = audit.write_backlog().await;
            if written > 0 {
                tracing::info!(written, left = audit.backlog_len(), "audit entries kept during an outage written");
            }
        }
    }
}

/// Aborts a task when the owner is dropped (the upkeep is aborted at shutdown).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `command_queue_depth{priority}` for every priority, zeros included, so the series exist.
async fn publish_queue_depth(queue: &dyn CommandQueue) {
    match queue.depth().await {
        Ok(depth) => {
            for priority in 0..=crate::domain::command::MAX_PRIORITY {
                let waiting = depth.iter().find(|(p, _)| *p == priority).map_or(0, |(_, n)| *n);
                metrics::gauge!(crate::telemetry::metrics::COMMAND_QUEUE_DEPTH, "priority" => priority.to_string())
                    .set(waiting as f64);
            }
        }
        Err(error) => tracing::warn!(%error, "could not measure the queue"),
    }
}
