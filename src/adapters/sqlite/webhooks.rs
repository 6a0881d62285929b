//! `WebhookRepo` and `DeliveryQueue` on SQLite, and the outbox insert the other SQLite adapters
//! make inside their own transactions. Claims run inside `BEGIN IMMEDIATE` (the database's one
//! write lock), so two dispatchers never take the same delivery.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Row, SqliteConnection, SqlitePool, sqlite::SqliteRow};
use uuid::Uuid;

use super::{from_micros, micros, opt_from_micros, uuid_from_text};
use crate::{
    adapters::{db::db_error, webhook_rows as stored},
    domain::{
        AttemptVerdict, Delivery, DeliveryAttempt, DeliveryFilter, DeliveryStatus, DomainError, DueDelivery,
        OutboxEvent, Page, PageRequest, Webhook, WebhookSecret,
    },
    ports::{DeliveryQueue, WebhookRepo},
};

const WEBHOOK_COLUMNS: &str = "id, url, description, events, enabled, created_at, updated_at";
const DELIVERY_COLUMNS: &str =
    "id, webhook_id, event_id, event, status, attempts, next_attempt_at, created_at, delivered_at";

pub struct SqliteWebhooks {
    pool: SqlitePool,
}

impl SqliteWebhooks {
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

/// Puts `event` into the outbox on `conn`, inside the caller's transaction, if any enabled
/// webhook subscribes to it: an event nobody wants costs no row (and no dispatcher work).
pub(super) async fn publish(conn: &mut SqliteConnection, event: &OutboxEvent) -> Result<(), DomainError> {
    publish_traced(conn, event, crate::telemetry::propagation::current_traceparent()).await
}

/// `publish` with the trace it belongs to given, for writers that run outside the request's span.
pub(super) async fn publish_traced(
    conn: &mut SqliteConnection,
    event: &OutboxEvent,
    traceparent: Option<String>,
) -> Result<(), DomainError> {
    sqlx::query(
        "INSERT INTO webhook_events (id, event, payload, traceparent, occurred_at)
         SELECT ?1, ?2, ?3, ?4, ?5
         WHERE EXISTS (SELECT 1 FROM webhooks WHERE enabled = 1 AND created_at <= ?5 AND events LIKE ?6)",
    )
    .bind(event.id.to_string())
    .bind(event.event.as_str())
    .bind(&event.payload)
    .bind(traceparent)
    .bind(micros(event.occurred_at))
    .bind(format!("%\"{}\"%", event.event.as_str()))
    .execute(conn)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// Runs a `SELECT EXISTS (…)` with at most one bound time.
async fn exists(pool: &SqlitePool, sql: &'static str, at: Option<i64>) -> Result<bool, DomainError> {
    let mut query = sqlx::query_scalar::<_, bool>(sql);
    if let Some(at) = at {
        query = query.bind(at);
    }
    query.fetch_one(pool).await.map_err(db_error)
}

fn webhook_from_row(row: &SqliteRow) -> Result<Webhook, DomainError> {
    Ok(Webhook {
        id: uuid_from_text(row.try_get("id").map_err(db_error)?)?,
        url: row.try_get("url").map_err(db_error)?,
        description: row.try_get("description").map_err(db_error)?,
        events: stored::events_from_json(row.try_get("events").map_err(db_error)?)?,
        enabled: row.try_get("enabled").map_err(db_error)?,
        created_at: from_micros(row.try_get("created_at").map_err(db_error)?)?,
        updated_at: from_micros(row.try_get("updated_at").map_err(db_error)?)?,
    })
}

fn delivery_from_row(row: &SqliteRow) -> Result<Delivery, DomainError> {
    Ok(Delivery {
        id: uuid_from_text(row.try_get("id").map_err(db_error)?)?,
        webhook_id: uuid_from_text(row.try_get("webhook_id").map_err(db_error)?)?,
        event_id: uuid_from_text(row.try_get("event_id").map_err(db_error)?)?,
        event: stored::event(row.try_get("event").map_err(db_error)?)?,
        status: stored::status(row.try_get("status").map_err(db_error)?)?,
        attempt_count: stored::count(row.try_get("attempts").map_err(db_error)?),
        next_attempt_at: opt_from_micros(row.try_get("next_attempt_at").map_err(db_error)?)?,
        created_at: from_micros(row.try_get("created_at").map_err(db_error)?)?,
        delivered_at: opt_from_micros(row.try_get("delivered_at").map_err(db_error)?)?,
        attempts: Vec::new(),
    })
}

fn attempt_from_row(row: &SqliteRow) -> Result<(Uuid, DeliveryAttempt), DomainError> {
    let attempt = DeliveryAttempt {
        attempt: stored::count(row.try_get("attempt").map_err(db_error)?),
        at: from_micros(row.try_get("at").map_err(db_error)?)?,
        status_code: row
            .try_get::<Option<i64>, _>("status_code")
            .map_err(db_error)?
            .and_then(|c| u16::try_from(c).ok()),
        latency_ms: row.try_get::<i64, _>("latency_ms").map_err(db_error)?.max(0) as u64,
        error: row.try_get("error").map_err(db_error)?,
        response_body: row.try_get("response_body").map_err(db_error)?,
    };
    Ok((uuid_from_text(row.try_get("delivery_id").map_err(db_error)?)?, attempt))
}

impl SqliteWebhooks {
    /// Fills in each delivery's attempts with one query for the whole page.
    async fn with_attempts(&self, mut deliveries: Vec<Delivery>) -> Result<Vec<Delivery>, DomainError> {
        if deliveries.is_empty() {
            return Ok(deliveries);
        }
        let ids: Vec<String> = deliveries.iter().map(|d| d.id.to_string()).collect();
        let rows = sqlx::query(
            "SELECT delivery_id, attempt, at, status_code, latency_ms, error, response_body FROM webhook_attempts
             WHERE delivery_id IN (SELECT value FROM json_each(?1)) ORDER BY attempt",
        )
        .bind(serde_json::Value::from(ids).to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let attempts = rows.iter().map(attempt_from_row).collect::<Result<Vec<_>, _>>()?;
        stored::attach(&mut deliveries, attempts);
        Ok(deliveries)
    }

    async fn delivery(&self, webhook_id: Uuid, id: Uuid) -> Result<Option<Delivery>, DomainError> {
        let sql = format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = ?1 AND webhook_id = ?2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .bind(webhook_id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        let Some(delivery) = row.as_ref().map(delivery_from_row).transpose()? else { return Ok(None) };
        Ok(self.with_attempts(vec![delivery]).await?.pop())
    }
}

#[async_trait]
impl WebhookRepo for SqliteWebhooks {
    async fn create(&self, webhook: &Webhook, secret: &WebhookSecret) -> Result<(), DomainError> {
        sqlx::query(
            "INSERT INTO webhooks (id, url, description, events, secret, enabled, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .bind(webhook.id.to_string())
        .bind(&webhook.url)
        .bind(webhook.description.as_deref())
        .bind(stored::events_to_json(&webhook.events))
        .bind(secret.expose())
        .bind(webhook.enabled)
        .bind(micros(webhook.created_at))
        .bind(micros(webhook.updated_at))
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn get(&self, id: Uuid) -> Result<Option<Webhook>, DomainError> {
        let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = ?1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.as_ref().map(webhook_from_row).transpose()
    }

    async fn list(&self, page: &PageRequest) -> Result<Page<Webhook>, DomainError> {
        let sql = format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks
             WHERE ?1 IS NULL OR (created_at, id) > (SELECT created_at, id FROM webhooks WHERE id = ?1)
             ORDER BY created_at, id LIMIT ?2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(page.after.map(|id| id.to_string()))
            .bind(page.fetch_limit())
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        let webhooks = rows.iter().map(webhook_from_row).collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_rows(webhooks, page, |w| w.id))
    }

    async fn update(&self, webhook: &Webhook) -> Result<bool, DomainError> {
        let done = sqlx::query(
            "UPDATE webhooks SET url = ?2, description = ?3, events = ?4, enabled = ?5, updated_at = ?6 WHERE id = ?1",
        )
        .bind(webhook.id.to_string())
        .bind(&webhook.url)
        .bind(webhook.description.as_deref())
        .bind(stored::events_to_json(&webhook.events))
        .bind(webhook.enabled)
        .bind(micros(webhook.updated_at))
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete(&self, id: Uuid) -> Result<bool, DomainError> {
        let done = sqlx::query("DELETE FROM webhooks WHERE id = ?1")
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
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
             WHERE webhook_id = ?1 AND (?2 IS NULL OR status = ?2)
               AND (?3 IS NULL OR (created_at, id) < (SELECT created_at, id FROM webhook_deliveries WHERE id = ?3))
             ORDER BY created_at DESC, id DESC LIMIT ?4"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(webhook_id.to_string())
            .bind(filter.status.map(DeliveryStatus::as_str))
            .bind(page.after.map(|id| id.to_string()))
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
             SET status = 'pending', next_attempt_at = ?3, max_attempts = MAX(max_attempts, attempts + 1)
             WHERE id = ?1 AND webhook_id = ?2 AND (lease_until IS NULL OR lease_until < ?3)",
        )
        .bind(delivery_id.to_string())
        .bind(webhook_id.to_string())
        .bind(micros(now))
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
impl DeliveryQueue for SqliteWebhooks {
    #[tracing::instrument(name = "db webhooks.fan_out", skip_all, fields(db.system = "sqlite"))]
    async fn fan_out(&self, max_attempts: u32, now: DateTime<Utc>, limit: u32) -> Result<usize, DomainError> {
        // A plain read first: the common answer is "nothing", which needs no write lock.
        if !exists(&self.pool, "SELECT EXISTS (SELECT 1 FROM webhook_events WHERE fanned_out = 0)", None).await? {
            return Ok(0);
        }
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
        let events = sqlx::query(
            "SELECT id, event, occurred_at FROM webhook_events WHERE fanned_out = 0 ORDER BY occurred_at LIMIT ?1",
        )
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        if events.is_empty() {
            return Ok(0);
        }
        let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE enabled = 1");
        let webhooks = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&mut *tx).await.map_err(db_error)?;
        let webhooks = webhooks.iter().map(webhook_from_row).collect::<Result<Vec<_>, _>>()?;
        for row in &events {
            let event_id: String = row.try_get("id").map_err(db_error)?;
            let event = stored::event(row.try_get("event").map_err(db_error)?)?;
            let occurred_at = from_micros(row.try_get("occurred_at").map_err(db_error)?)?;
            let receivers: Vec<&Webhook> =
                webhooks.iter().filter(|w| stored::receives(w, event, occurred_at)).collect();
            for webhook in &receivers {
                sqlx::query(
                    "INSERT INTO webhook_deliveries (id, webhook_id, event_id, event, status, max_attempts, next_attempt_at, created_at)
                     VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6, ?6) ON CONFLICT (webhook_id, event_id) DO NOTHING",
                )
                .bind(Uuid::new_v4().to_string())
                .bind(webhook.id.to_string())
                .bind(&event_id)
                .bind(event.as_str())
                .bind(i64::from(max_attempts))
                .bind(micros(now))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            }
            // An event nobody subscribed to is not kept.
            let done = if receivers.is_empty() {
                "DELETE FROM webhook_events WHERE id = ?1"
            } else {
                "UPDATE webhook_events SET fanned_out = 1 WHERE id = ?1"
            };
            sqlx::query(done).bind(&event_id).execute(&mut *tx).await.map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(events.len())
    }

    #[tracing::instrument(name = "db webhooks.claim", skip_all, fields(db.system = "sqlite"))]
    async fn claim(
        &self,
        worker: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DueDelivery>, DomainError> {
        let due = "SELECT EXISTS (SELECT 1 FROM webhook_deliveries
                   WHERE status = 'pending' AND next_attempt_at <= ?1 AND (lease_until IS NULL OR lease_until < ?1))";
        if !exists(&self.pool, due, Some(micros(now))).await? {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
        let claimed = sqlx::query(
            "UPDATE webhook_deliveries SET claimed_by = ?1, lease_until = ?3
             WHERE id IN (SELECT id FROM webhook_deliveries
                          WHERE status = 'pending' AND next_attempt_at <= ?2 AND (lease_until IS NULL OR lease_until < ?2)
                            AND webhook_id IN (SELECT id FROM webhooks WHERE enabled = 1)
                          ORDER BY next_attempt_at LIMIT ?4)
             RETURNING id",
        )
        .bind(worker)
        .bind(micros(now))
        .bind(micros(lease_until))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        let ids: Vec<String> =
            claimed.iter().map(|row| row.try_get("id")).collect::<Result<_, _>>().map_err(db_error)?;
        let rows = sqlx::query(
            "SELECT d.id, d.webhook_id, d.event, d.attempts, d.max_attempts, w.url, w.secret, e.payload, e.traceparent
             FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id JOIN webhook_events e ON e.id = d.event_id
             WHERE d.id IN (SELECT value FROM json_each(?1)) ORDER BY d.next_attempt_at",
        )
        .bind(serde_json::Value::from(ids).to_string())
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        rows.iter()
            .map(|row| {
                Ok(DueDelivery {
                    id: uuid_from_text(row.try_get("id").map_err(db_error)?)?,
                    webhook_id: uuid_from_text(row.try_get("webhook_id").map_err(db_error)?)?,
                    url: row.try_get("url").map_err(db_error)?,
                    secret: stored::secret(row.try_get("secret").map_err(db_error)?)?,
                    event: stored::event(row.try_get("event").map_err(db_error)?)?,
                    payload: row.try_get("payload").map_err(db_error)?,
                    traceparent: row.try_get("traceparent").map_err(db_error)?,
                    attempt: stored::count(row.try_get("attempts").map_err(db_error)?) + 1,
                    max_attempts: stored::count(row.try_get("max_attempts").map_err(db_error)?),
                })
            })
            .collect()
    }

    #[tracing::instrument(name = "db webhooks.record", skip_all, fields(db.system = "sqlite"))]
    async fn record(
        &self,
        delivery_id: Uuid,
        worker: &str,
        attempt: &DeliveryAttempt,
        verdict: AttemptVerdict,
    ) -> Result<bool, DomainError> {
        let stored::AfterAttempt { status, next_attempt_at, delivered_at } = stored::AfterAttempt::of(verdict, attempt);
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
        let done = sqlx::query(
            "UPDATE webhook_deliveries
             SET status = ?3, attempts = ?4, next_attempt_at = ?5, delivered_at = COALESCE(?6, delivered_at),
                 claimed_by = NULL, lease_until = NULL
             WHERE id = ?1 AND claimed_by = ?2",
        )
        .bind(delivery_id.to_string())
        .bind(worker)
        .bind(status.as_str())
        .bind(i64::from(attempt.attempt))
        .bind(next_attempt_at.map(micros))
        .bind(delivered_at.map(micros))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO webhook_attempts (delivery_id, attempt, at, status_code, latency_ms, error, response_body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .bind(delivery_id.to_string())
        .bind(i64::from(attempt.attempt))
        .bind(micros(attempt.at))
        .bind(attempt.status_code.map(i64::from))
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
        let deliveries = sqlx::query("DELETE FROM webhook_deliveries WHERE status <> 'pending' AND created_at < ?1")
            .bind(micros(before))
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        sqlx::query(
            "DELETE FROM webhook_events WHERE fanned_out = 1 AND occurred_at < ?1
               AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = webhook_events.id)",
        )
        .bind(micros(before))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(deliveries.rows_affected())
    }

    async fn next_due(&self, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, DomainError> {
        let row = sqlx::query(
            "SELECT CASE WHEN EXISTS (SELECT 1 FROM webhook_events WHERE fanned_out = 0) THEN ?1
                    ELSE (SELECT MIN(CASE WHEN lease_until > next_attempt_at THEN lease_until ELSE next_attempt_at END)
                          FROM webhook_deliveries
                          WHERE status = 'pending' AND webhook_id IN (SELECT id FROM webhooks WHERE enabled = 1)) END AS due",
        )
        .bind(micros(now))
        .fetch_one(&self.pool)
        .await
        .map_err(db_error)?;
        opt_from_micros(row.try_get("due").map_err(db_error)?)
    }
}
