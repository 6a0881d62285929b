//! `DeliveryQueue` on SQL: dispatchers on every replica claim due deliveries with a lease, so
//! each attempt is made by one of them. Postgres claims with `FOR UPDATE SKIP LOCKED` in one
//! statement (no dispatcher waits on another); SQLite under its write lock, after a plain read
//! that usually finds nothing.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    dialect::{Db, Dialect, Kind, Stmt, begin, commit},
    errors::corrupt,
    outbox,
    values::Row,
    webhooks::{ATTEMPT_COLUMNS, event},
};
use crate::{
    domain::{AttemptVerdict, DeliveryAttempt, DeliveryStatus, DomainError, DueDelivery, WebhookSecret},
    ports::DeliveryQueue,
};

/// Deliveries due now, not leased, of enabled webhooks, oldest due first (`$1`: now).
const DUE: &str = "SELECT id FROM webhook_deliveries
     WHERE status = 'pending' AND next_attempt_at <= $1 AND (lease_until IS NULL OR lease_until < $1)
       AND webhook_id IN (SELECT id FROM webhooks WHERE enabled)
     ORDER BY next_attempt_at";

pub(crate) struct SqlDeliveries<D: Dialect> {
    db: Db<D>,
}

impl<D: Dialect> SqlDeliveries<D> {
    pub(crate) fn new(db: Db<D>) -> Self {
        Self { db }
    }
}

fn due_from_row(row: &impl Row) -> Result<DueDelivery, DomainError> {
    let secret: String = row.get("secret")?;
    Ok(DueDelivery {
        id: row.required_uuid("id")?,
        webhook_id: row.required_uuid("webhook_id")?,
        url: row.get("url")?,
        secret: WebhookSecret::from_stored(secret).ok_or_else(|| corrupt("webhook secret", "not whsec_<base64>"))?,
        event: event(&row.get::<String>("event")?)?,
        payload: row.get("payload")?,
        traceparent: row.get("traceparent")?,
        attempt: row.count("attempts")? + 1,
        max_attempts: row.count("max_attempts")?,
    })
}

#[async_trait]
impl<D: Dialect> DeliveryQueue for SqlDeliveries<D> {
    #[tracing::instrument(name = "db webhooks.fan_out", skip_all, fields(db.system = D::SYSTEM))]
    async fn fan_out(&self, max_attempts: u32, now: DateTime<Utc>, limit: u32) -> Result<usize, DomainError> {
        outbox::fan_out(&self.db, max_attempts, now, limit).await
    }

    #[tracing::instrument(name = "db webhooks.claim", skip_all, fields(db.system = D::SYSTEM))]
    async fn claim(
        &self,
        worker: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DueDelivery>, DomainError> {
        let take = |lock: &str| {
            format!(
                "UPDATE webhook_deliveries SET claimed_by = $2, lease_until = $3 WHERE id IN ({DUE} LIMIT $4{lock})
                 RETURNING id, webhook_id, event_id, event, attempts, max_attempts, next_attempt_at"
            )
        };
        let claim = |sql: String| {
            Stmt::<D>::new(sql).time(Some(now)).value(worker.to_owned()).time(Some(lease_until)).value(i64::from(limit))
        };
        const DUE_COLUMNS: &str =
            "c.id, c.webhook_id, c.event, c.attempts, c.max_attempts, w.url, w.secret, e.payload, e.traceparent";
        const JOINS: &str = "JOIN webhooks w ON w.id = c.webhook_id JOIN webhook_events e ON e.id = c.event_id";
        match D::KIND {
            // One statement: claim and read what the dispatcher needs.
            Kind::Postgres => {
                let sql = format!(
                    "WITH claimed AS ({}) SELECT {DUE_COLUMNS} FROM claimed c {JOINS} ORDER BY c.next_attempt_at",
                    take(" FOR UPDATE SKIP LOCKED")
                );
                claim(sql).fetch_mapped(&self.db, due_from_row).await
            }
            // SQLite has no UPDATE inside WITH: claim under the write lock, then read.
            Kind::Sqlite => {
                let due = format!("SELECT EXISTS ({DUE}) AS due");
                if !Stmt::<D>::new(due).time(Some(now)).fetch_one(&self.db).await?.get::<bool>("due")? {
                    return Ok(Vec::new());
                }
                let mut tx = begin(&self.db).await?;
                let ids = claim(take("")).fetch_mapped(&mut tx, |row| row.get::<String>("id")).await?;
                let sql = format!(
                    "SELECT {DUE_COLUMNS} FROM webhook_deliveries c {JOINS}
                     WHERE c.id IN (SELECT value FROM json_each($1)) ORDER BY c.next_attempt_at"
                );
                let claimed = Stmt::<D>::new(sql).strings(ids).fetch_mapped(&mut tx, due_from_row).await?;
                commit(tx).await?;
                Ok(claimed)
            }
        }
    }

    #[tracing::instrument(name = "db webhooks.record", skip_all, fields(db.system = D::SYSTEM))]
    async fn record(
        &self,
        delivery_id: Uuid,
        worker: &str,
        attempt: &DeliveryAttempt,
        verdict: AttemptVerdict,
    ) -> Result<bool, DomainError> {
        let (status, next_attempt_at, delivered_at) = match verdict {
            AttemptVerdict::Delivered => (DeliveryStatus::Succeeded, None, Some(attempt.at)),
            AttemptVerdict::RetryAt(at) => (DeliveryStatus::Pending, Some(at), None),
            AttemptVerdict::GaveUp => (DeliveryStatus::Failed, None, None),
        };
        let number = i32::try_from(attempt.attempt).unwrap_or(i32::MAX);
        let mut tx = begin(&self.db).await?;
        let done = Stmt::<D>::new(
            "UPDATE webhook_deliveries
             SET status = $3, attempts = $4, next_attempt_at = $5, delivered_at = COALESCE($6, delivered_at),
                 claimed_by = NULL, lease_until = NULL
             WHERE id = $1 AND claimed_by = $2",
        )
        .uuid(Some(delivery_id))
        .value(worker.to_owned())
        .value(status.as_str())
        .value(number)
        .time(next_attempt_at)
        .time(delivered_at)
        .execute(&mut tx)
        .await?;
        if done == 0 {
            return Ok(false);
        }
        Stmt::<D>::new(format!("INSERT INTO webhook_attempts ({ATTEMPT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"))
            .uuid(Some(delivery_id))
            .value(number)
            .time(Some(attempt.at))
            .value(attempt.status_code.map(i32::from))
            .value(i64::try_from(attempt.latency_ms).unwrap_or(i64::MAX))
            .value(attempt.error.clone())
            .value(attempt.response_body.clone())
            .execute(&mut tx)
            .await?;
        commit(tx).await?;
        Ok(true)
    }

    async fn purge(&self, before: DateTime<Utc>) -> Result<u64, DomainError> {
        let mut tx = begin(&self.db).await?;
        let deliveries = Stmt::<D>::new("DELETE FROM webhook_deliveries WHERE status <> 'pending' AND created_at < $1")
            .time(Some(before))
            .execute(&mut tx)
            .await?;
        Stmt::<D>::new(
            "DELETE FROM webhook_events WHERE fanned_out AND occurred_at < $1
               AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = webhook_events.id)",
        )
        .time(Some(before))
        .execute(&mut tx)
        .await?;
        commit(tx).await?;
        Ok(deliveries)
    }

    async fn next_due(&self, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, DomainError> {
        let later = match D::KIND {
            Kind::Postgres => "GREATEST(next_attempt_at, lease_until)",
            Kind::Sqlite => "CASE WHEN lease_until > next_attempt_at THEN lease_until ELSE next_attempt_at END",
        };
        let sql = format!(
            "SELECT CASE WHEN EXISTS (SELECT 1 FROM webhook_events WHERE NOT fanned_out) THEN $1
                    ELSE (SELECT MIN({later}) FROM webhook_deliveries
                          WHERE status = 'pending' AND webhook_id IN (SELECT id FROM webhooks WHERE enabled)) END AS due"
        );
        Stmt::<D>::new(sql).time(Some(now)).fetch_one(&self.db).await?.time("due")
    }
}
