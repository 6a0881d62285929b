//! `WebhookRepo` and `DeliveryQueue` on Postgres, and the outbox insert the other Postgres
//! adapters make inside their own transactions. Fan-out and claims lock rows with
//! `FOR UPDATE SKIP LOCKED`, so dispatchers on every replica share the work without ever
//! handling the same event or delivery at once, and without waiting on each other.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Row, postgres::PgRow};
use uuid::Uuid;

use crate::{
    adapters::{
        db::{corrupt, db_error},
        webhook_rows as stored,
    },
    domain::{
        AttemptVerdict, Delivery, DeliveryAttempt, DeliveryFilter, DeliveryStatus, DomainError, DueDelivery,
        OutboxEvent, Page, PageRequest, Webhook, WebhookEvent, WebhookSecret,
    },
    ports::{DeliveryQueue, WebhookRepo},
};

const WEBHOOK_COLUMNS: &str = "id, url, description, events, enabled, created_at, updated_at";
const DELIVERY_COLUMNS: &str =
    "id, webhook_id, event_id, event, status, attempts, next_attempt_at, created_at, delivered_at";

pub struct PgWebhooks {
    pool: PgPool,
}

impl PgWebhooks {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

/// The outbox insert, with its parameters numbered from `$first`: the event goes in only if an
/// enabled webhook subscribes to it, so an event nobody wants costs no row (and no dispatcher
/// work). Bind its values with `bind_event`.
pub(super) fn publish_sql(first: usize) -> String {
    let [id, event, payload, traceparent, at] = std::array::from_fn(|i| format!("${}", first + i));
    format!(
        "INSERT INTO webhook_events (id, event, payload, traceparent, occurred_at)
         SELECT {id}, {event}, {payload}, {traceparent}, {at}
         WHERE EXISTS (SELECT 1 FROM webhooks
                       WHERE enabled AND created_at <= {at} AND events @> jsonb_build_array({event}::text))"
    )
}

pub(super) type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds `event`, and the trace it belongs to, to `publish_sql`'s parameters.
pub(super) fn bind_event<'q>(query: PgQuery<'q>, event: &'q OutboxEvent, traceparent: Option<String>) -> PgQuery<'q> {
    query.bind(event.id).bind(event.event.as_str()).bind(&event.payload).bind(traceparent).bind(event.occurred_at)
}

/// Puts `event` into the outbox on `conn`, inside the caller's transaction.
pub(super) async fn publish(conn: &mut PgConnection, event: &OutboxEvent) -> Result<(), DomainError> {
    let traceparent = crate::telemetry::propagation::current_traceparent();
    let query = bind_event(sqlx::query(sqlx::AssertSqlSafe(publish_sql(1))), event, traceparent);
    query.execute(conn).await.map_err(db_error)?;
    Ok(())
}

fn events_value(events: &[WebhookEvent]) -> serde_json::Value {
    serde_json::to_value(events).unwrap_or_default()
}

fn webhook_from_row(row: &PgRow) -> Result<Webhook, DomainError> {
    let events: serde_json::Value = row.try_get("events").map_err(db_error)?;
    Ok(Webhook {
        id: row.try_get("id").map_err(db_error)?,
        url: row.try_get("url").map_err(db_error)?,
        description: row.try_get("description").map_err(db_error)?,
        events: serde_json::from_value(events).map_err(|e| corrupt("webhook events", e))?,
        enabled: row.try_get("enabled").map_err(db_error)?,
        created_at: row.try_get("created_at").map_err(db_error)?,
        updated_at: row.try_get("updated_at").map_err(db_error)?,
    })
}

fn delivery_from_row(row: &PgRow) -> Result<Delivery, DomainError> {
    Ok(Delivery {
        id: row.try_get("id").map_err(db_error)?,
        webhook_id: row.try_get("webhook_id").map_err(db_error)?,
        event_id: row.try_get("event_id").map_err(db_error)?,
        event: stored::event(row.try_get("event").map_err(db_error)?)?,
        status: stored::status(row.try_get("status").map_err(db_error)?)?,
        attempt_count: stored::count(row.try_get::<i32, _>("attempts").map_err(db_error)?.into()),
        next_attempt_at: row.try_get("next_attempt_at").map_err(db_error)?,
        created_at: row.try_get("created_at").map_err(db_error)?,
        delivered_at: row.try_get("delivered_at").map_err(db_error)?,
        attempts: Vec::new(),
    })
}

fn attempt_from_row(row: &PgRow) -> Result<(Uuid, DeliveryAttempt), DomainError> {
    let attempt = DeliveryAttempt {
        attempt: stored::count(row.try_get::<i32, _>("attempt").map_err(db_error)?.into()),
        at: row.try_get("at").map_err(db_error)?,
        status_code: row
            .try_get::<Option<i32>, _>("status_code")
            .map_err(db_error)?
            .and_then(|c| u16::try_from(c).ok()),
        latency_ms: row.try_get::<i64, _>("latency_ms").map_err(db_error)?.max(0) as u64,
        error: row.try_get("error").map_err(db_error)?,
        response_body: row.try_get("response_body").map_err(db_error)?,
    };
    Ok((row.try_get("delivery_id").map_err(db_error)?, attempt))
}

impl PgWebhooks {
    /// Fills in each delivery's attempts with one query for the whole page.
    async fn with_attempts(&self, mut deliveries: Vec<Delivery>) -> Result<Vec<Delivery>, DomainError> {
        if deliveries.is_empty() {
            return Ok(deliveries);
        }
        let ids: Vec<Uuid> = deliveries.iter().map(|d| d.id).collect();
        let rows = sqlx::query(
            "SELECT delivery_id, attempt, at, status_code, latency_ms, error, response_body FROM webhook_attempts
             WHERE delivery_id = ANY($1) ORDER BY attempt",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let attempts = rows.iter().map(attempt_from_row).collect::<Result<Vec<_>, _>>()?;
        stored::attach(&mut deliveries, attempts);
        Ok(deliveries)
    }

    async fn delivery(&self, webhook_id: Uuid, id: Uuid) -> Result<Option<Delivery>, DomainError> {
        let sql = format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = $1 AND webhook_id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(webhook_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        let Some(delivery) = row.as_ref().map(delivery_from_row).transpose()? else { return Ok(None) };
        Ok(self.with_attempts(vec![delivery]).await?.pop())
    }
}

#[async_trait]
impl WebhookRepo for PgWebhooks {
    async fn create(&self, webhook: &Webhook, secret: &WebhookSecret) -> Result<(), DomainError> {
        sqlx::query(
            "INSERT INTO webhooks (id, url, description, events, secret, enabled, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(webhook.id)
        .bind(&webhook.url)
        .bind(webhook.description.as_deref())
        .bind(events_value(&webhook.events))
        .bind(secret.expose())
        .bind(webhook.enabled)
        .bind(webhook.created_at)
        .bind(webhook.updated_at)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn get(&self, id: Uuid) -> Result<Option<Webhook>, DomainError> {
        let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&self.pool).await.map_err(db_error)?;
        row.as_ref().map(webhook_from_row).transpose()
    }

    async fn list(&self, page: &PageRequest) -> Result<Page<Webhook>, DomainError> {
        let sql = format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks
             WHERE $1::uuid IS NULL OR (created_at, id) > (SELECT created_at, id FROM webhooks WHERE id = $1)
             ORDER BY created_at, id LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(page.after)
            .bind(page.fetch_limit())
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        let webhooks = rows.iter().map(webhook_from_row).collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_rows(webhooks, page, |w| w.id))
    }

    async fn update(&self, webhook: &Webhook) -> Result<bool, DomainError> {
        let done = sqlx::query(
            "UPDATE webhooks SET url = $2, description = $3, events = $4, enabled = $5, updated_at = $6 WHERE id = $1",
        )
        .bind(webhook.id)
        .bind(&webhook.url)
        .bind(webhook.description.as_deref())
        .bind(events_value(&webhook.events))
        .bind(webhook.enabled)
        .bind(webhook.updated_at)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete(&self, id: Uuid) -> Result<bool, DomainError> {
        let done =
            sqlx::query("DELETE FROM webhooks WHERE id = $1").bind(id).execute(&self.pool).await.map_err(db_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn deliveries(
        &self,
        webhook_id: Uuid,
        filter: &DeliveryFilter,
        page: &PageRequest,
    ) -> Result<Page<Delivery>, DomainError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries
             WHERE webhook_id = $1 AND ($2::text IS NULL OR status = $2)
               AND ($3::uuid IS NULL OR (created_at, id) < (SELECT created_at, id FROM webhook_deliveries WHERE id = $3))
             ORDER BY created_at DESC, id DESC LIMIT $4"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(webhook_id)
            .bind(filter.status.map(DeliveryStatus::as_str))
            .bind(page.after)
            .bind(page.fetch_limit())
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        let deliveries = rows.iter().map(delivery_from_row).collect::<Result<Vec<_>, _>>()?;
        let page = Page::from_rows(deliveries, page, |d| d.id);
        Ok(Page { items: self.with_attempts(page.items).await?, next_cursor: page.next_cursor })
    }

    async fn redeliver(
        &self,
        webhook_id: Uuid,
        delivery_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<Delivery>, DomainError> {
        let done = sqlx::query(
            "UPDATE webhook_deliveries
             SET status = 'pending', next_attempt_at = $3, max_attempts = GREATEST(max_attempts, attempts + 1)
             WHERE id = $1 AND webhook_id = $2 AND (lease_until IS NULL OR lease_until < $3)",
        )
        .bind(delivery_id)
        .bind(webhook_id)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        let delivery = self.delivery(webhook_id, delivery_id).await?;
        if done.rows_affected() == 0 && delivery.is_some() {
            return Err(DomainError::Conflict(
                "an attempt of this delivery is in flight; try again when it ends".into(),
            ));
        }
        Ok(delivery)
    }
}

#[async_trait]
impl DeliveryQueue for PgWebhooks {
    #[tracing::instrument(name = "db webhooks.fan_out", skip_all, fields(db.system = "postgresql"))]
    async fn fan_out(&self, max_attempts: u32, now: DateTime<Utc>, limit: u32) -> Result<usize, DomainError> {
        // A plain read first: the common answer is "nothing", which needs no transaction.
        let waiting: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM webhook_events WHERE NOT fanned_out)")
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?;
        if !waiting {
            return Ok(0);
        }
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let events = sqlx::query(
            "SELECT id, event, occurred_at FROM webhook_events WHERE NOT fanned_out
             ORDER BY occurred_at LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        if events.is_empty() {
            return Ok(0);
        }
        let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE enabled");
        let webhooks = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&mut *tx).await.map_err(db_error)?;
        let webhooks = webhooks.iter().map(webhook_from_row).collect::<Result<Vec<_>, _>>()?;
        for row in &events {
            let event_id: Uuid = row.try_get("id").map_err(db_error)?;
            let event = stored::event(row.try_get("event").map_err(db_error)?)?;
            let occurred_at: DateTime<Utc> = row.try_get("occurred_at").map_err(db_error)?;
            let receivers: Vec<&Webhook> =
                webhooks.iter().filter(|w| stored::receives(w, event, occurred_at)).collect();
            for webhook in &receivers {
                sqlx::query(
                    "INSERT INTO webhook_deliveries (id, webhook_id, event_id, event, status, max_attempts, next_attempt_at, created_at)
                     VALUES ($1, $2, $3, $4, 'pending', $5, $6, $6) ON CONFLICT (webhook_id, event_id) DO NOTHING",
                )
                .bind(Uuid::new_v4())
                .bind(webhook.id)
                .bind(event_id)
                .bind(event.as_str())
                .bind(i32::try_from(max_attempts).unwrap_or(i32::MAX))
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            }
            // An event nobody subscribed to is not kept.
            let done = if receivers.is_empty() {
                "DELETE FROM webhook_events WHERE id = $1"
            } else {
                "UPDATE webhook_events SET fanned_out = TRUE WHERE id = $1"
            };
            sqlx::query(done).bind(event_id).execute(&mut *tx).await.map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(events.len())
    }

    #[tracing::instrument(name = "db webhooks.claim", skip_all, fields(db.system = "postgresql"))]
    async fn claim(
        &self,
        worker: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DueDelivery>, DomainError> {
        let rows = sqlx::query(
            "WITH claimed AS (
                 UPDATE webhook_deliveries SET claimed_by = $1, lease_until = $3
                 WHERE id IN (SELECT id FROM webhook_deliveries
                              WHERE status = 'pending' AND next_attempt_at <= $2 AND (lease_until IS NULL OR lease_until < $2)
                                AND webhook_id IN (SELECT id FROM webhooks WHERE enabled)
                              ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED)
                 RETURNING id, webhook_id, event_id, event, attempts, max_attempts, next_attempt_at)
             SELECT c.id, c.webhook_id, c.event, c.attempts, c.max_attempts, w.url, w.secret, e.payload, e.traceparent
             FROM claimed c JOIN webhooks w ON w.id = c.webhook_id JOIN webhook_events e ON e.id = c.event_id
             ORDER BY c.next_attempt_at",
        )
        .bind(worker)
        .bind(now)
        .bind(lease_until)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                Ok(DueDelivery {
                    id: row.try_get("id").map_err(db_error)?,
                    webhook_id: row.try_get("webhook_id").map_err(db_error)?,
                    url: row.try_get("url").map_err(db_error)?,
                    secret: stored::secret(row.try_get("secret").map_err(db_error)?)?,
                    event: stored::event(row.try_get("event").map_err(db_error)?)?,
                    payload: row.try_get("payload").map_err(db_error)?,
                    traceparent: row.try_get("traceparent").map_err(db_error)?,
                    attempt: stored::count(row.try_get::<i32, _>("attempts").map_err(db_error)?.into()) + 1,
                    max_attempts: stored::count(row.try_get::<i32, _>("max_attempts").map_err(db_error)?.into()),
                })
            })
            .collect()
    }

    #[tracing::instrument(name = "db webhooks.record", skip_all, fields(db.system = "postgresql"))]
    async fn record(
        &self,
        delivery_id: Uuid,
        worker: &str,
        attempt: &DeliveryAttempt,
        verdict: AttemptVerdict,
    ) -> Result<bool, DomainError> {
        let stored::AfterAttempt { status, next_attempt_at, delivered_at } = stored::AfterAttempt::of(verdict, attempt);
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let done = sqlx::query(
            "UPDATE webhook_deliveries
             SET status = $3, attempts = $4, next_attempt_at = $5, delivered_at = COALESCE($6, delivered_at),
                 claimed_by = NULL, lease_until = NULL
             WHERE id = $1 AND claimed_by = $2",
        )
        .bind(delivery_id)
        .bind(worker)
        .bind(status.as_str())
        .bind(i32::try_from(attempt.attempt).unwrap_or(i32::MAX))
        .bind(next_attempt_at)
        .bind(delivered_at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO webhook_attempts (delivery_id, attempt, at, status_code, latency_ms, error, response_body)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(delivery_id)
        .bind(i32::try_from(attempt.attempt).unwrap_or(i32::MAX))
        .bind(attempt.at)
        .bind(attempt.status_code.map(i32::from))
        .bind(i64::try_from(attempt.latency_ms).unwrap_or(i64::MAX))
        .bind(attempt.error.as_deref())
        .bind(attempt.response_body.as_deref())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(true)
    }

    async fn purge(&self, before: DateTime<Utc>) -> Result<u64, DomainError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let deliveries = sqlx::query("DELETE FROM webhook_deliveries WHERE status <> 'pending' AND created_at < $1")
            .bind(before)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        sqlx::query(
            "DELETE FROM webhook_events WHERE fanned_out AND occurred_at < $1
               AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = webhook_events.id)",
        )
        .bind(before)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(deliveries.rows_affected())
    }

    async fn next_due(&self, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, DomainError> {
        let row = sqlx::query(
            "SELECT CASE WHEN EXISTS (SELECT 1 FROM webhook_events WHERE NOT fanned_out) THEN $1
                    ELSE (SELECT MIN(GREATEST(next_attempt_at, lease_until))
                          FROM webhook_deliveries
                          WHERE status = 'pending' AND webhook_id IN (SELECT id FROM webhooks WHERE enabled)) END AS due",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(db_error)?;
        row.try_get("due").map_err(db_error)
    }
}
