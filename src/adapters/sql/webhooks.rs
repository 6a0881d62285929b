//! `WebhookRepo` on SQL: the subscriptions, and their deliveries as the API lists and retries
//! them. Who receives an event is the domain's rule (`Webhook::receives`); see `outbox`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    dialect::{Db, Dialect, Kind, Stmt},
    errors::corrupt,
    values::Row,
};
use crate::{
    domain::{
        Delivery, DeliveryAttempt, DeliveryFilter, DeliveryStatus, DomainError, Page, PageRequest, Webhook,
        WebhookEvent, WebhookSecret,
    },
    ports::{Redelivery, WebhookRepo},
};

pub(super) const WEBHOOK_COLUMNS: &str = "id, url, description, events, enabled, created_at, updated_at";
const DELIVERY_COLUMNS: &str =
    "id, webhook_id, event_id, event, status, attempts, next_attempt_at, created_at, delivered_at";
pub(super) const ATTEMPT_COLUMNS: &str = "delivery_id, attempt, at, status_code, latency_ms, error, response_body";

pub(crate) struct SqlWebhooks<D: Dialect> {
    db: Db<D>,
}

pub(super) fn webhook_from_row(row: &impl Row) -> Result<Webhook, DomainError> {
    Ok(Webhook {
        id: row.required_uuid("id")?,
        url: row.get("url")?,
        description: row.get("description")?,
        events: row.json("events")?,
        enabled: row.get("enabled")?,
        created_at: row.required_time("created_at")?,
        updated_at: row.required_time("updated_at")?,
    })
}

pub(super) fn event(raw: &str) -> Result<WebhookEvent, DomainError> {
    WebhookEvent::parse(raw).ok_or_else(|| corrupt("webhook event", raw))
}

fn delivery_from_row(row: &impl Row) -> Result<Delivery, DomainError> {
    let status: String = row.get("status")?;
    Ok(Delivery {
        id: row.required_uuid("id")?,
        webhook_id: row.required_uuid("webhook_id")?,
        event_id: row.required_uuid("event_id")?,
        event: event(&row.get::<String>("event")?)?,
        status: DeliveryStatus::parse(&status).ok_or_else(|| corrupt("delivery status", &status))?,
        attempt_count: row.count("attempts")?,
        next_attempt_at: row.time("next_attempt_at")?,
        created_at: row.required_time("created_at")?,
        delivered_at: row.time("delivered_at")?,
        attempts: Vec::new(),
    })
}

fn attempt_from_row(row: &impl Row) -> Result<(Uuid, DeliveryAttempt), DomainError> {
    let attempt = DeliveryAttempt {
        attempt: row.count("attempt")?,
        at: row.required_time("at")?,
        status_code: row.int("status_code")?.and_then(|c| u16::try_from(c).ok()),
        latency_ms: row.required_int("latency_ms")?.max(0) as u64,
        error: row.get("error")?,
        response_body: row.get("response_body")?,
    };
    Ok((row.required_uuid("delivery_id")?, attempt))
}

impl<D: Dialect> SqlWebhooks<D> {
    pub(crate) fn new(db: Db<D>) -> Self {
        Self { db }
    }

    /// Fills in each delivery's attempts (oldest first) with one query for the whole page.
    async fn with_attempts(&self, mut deliveries: Vec<Delivery>) -> Result<Vec<Delivery>, DomainError> {
        if deliveries.is_empty() {
            return Ok(deliveries);
        }
        let ids = match D::KIND {
            Kind::Postgres => "SELECT unnest($1::uuid[])",
            Kind::Sqlite => "SELECT value FROM json_each($1)",
        };
        let sql =
            format!("SELECT {ATTEMPT_COLUMNS} FROM webhook_attempts WHERE delivery_id IN ({ids}) ORDER BY attempt");
        let attempts = Stmt::<D>::new(sql)
            .strings(deliveries.iter().map(|d| d.id.to_string()).collect())
            .fetch_mapped(&self.db, attempt_from_row)
            .await?;
        for (id, attempt) in attempts {
            if let Some(delivery) = deliveries.iter_mut().find(|d| d.id == id) {
                delivery.attempts.push(attempt);
            }
        }
        Ok(deliveries)
    }

    async fn delivery(&self, webhook_id: Uuid, id: Uuid) -> Result<Option<Delivery>, DomainError> {
        let sql = format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = $1 AND webhook_id = $2");
        let row = Stmt::<D>::new(sql).uuid(Some(id)).uuid(Some(webhook_id)).fetch_optional(&self.db).await?;
        let Some(delivery) = row.as_ref().map(delivery_from_row).transpose()? else { return Ok(None) };
        Ok(self.with_attempts(vec![delivery]).await?.pop())
    }
}

#[async_trait]
impl<D: Dialect> WebhookRepo for SqlWebhooks<D> {
    async fn create(&self, webhook: &Webhook, secret: &WebhookSecret) -> Result<(), DomainError> {
        Stmt::<D>::new(
            "INSERT INTO webhooks (id, url, description, events, secret, enabled, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .uuid(Some(webhook.id))
        .value(webhook.url.clone())
        .value(webhook.description.clone())
        .json(&webhook.events)
        .value(secret.expose().to_owned())
        .value(webhook.enabled)
        .time(Some(webhook.created_at))
        .time(Some(webhook.updated_at))
        .execute(&self.db)
        .await?;
        Ok(())
    }

    async fn get(&self, id: Uuid) -> Result<Option<Webhook>, DomainError> {
        let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1");
        Stmt::<D>::new(sql).uuid(Some(id)).fetch_optional(&self.db).await?.as_ref().map(webhook_from_row).transpose()
    }

    async fn list(&self, page: &PageRequest) -> Result<Page<Webhook>, DomainError> {
        let sql = format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks
             WHERE $1 IS NULL OR (created_at, id) > (SELECT created_at, id FROM webhooks WHERE id = $1)
             ORDER BY created_at, id LIMIT $2"
        );
        let webhooks = Stmt::<D>::new(sql).page(page).fetch_mapped(&self.db, webhook_from_row).await?;
        Ok(Page::from_rows(webhooks, page, |w| w.id))
    }

    async fn update(&self, webhook: &Webhook) -> Result<bool, DomainError> {
        let done = Stmt::<D>::new(
            "UPDATE webhooks SET url = $2, description = $3, events = $4, enabled = $5, updated_at = $6 WHERE id = $1",
        )
        .uuid(Some(webhook.id))
        .value(webhook.url.clone())
        .value(webhook.description.clone())
        .json(&webhook.events)
        .value(webhook.enabled)
        .time(Some(webhook.updated_at))
        .execute(&self.db)
        .await?;
        Ok(done == 1)
    }

    async fn delete(&self, id: Uuid) -> Result<bool, DomainError> {
        Ok(Stmt::<D>::new("DELETE FROM webhooks WHERE id = $1").uuid(Some(id)).execute(&self.db).await? == 1)
    }

    async fn deliveries(
        &self,
        webhook_id: Uuid,
        filter: &DeliveryFilter,
        page: &PageRequest,
    ) -> Result<Page<Delivery>, DomainError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries
             WHERE webhook_id = $1 AND ($2 IS NULL OR status = $2)
               AND ($3 IS NULL OR (created_at, id) < (SELECT created_at, id FROM webhook_deliveries WHERE id = $3))
             ORDER BY created_at DESC, id DESC LIMIT $4"
        );
        let deliveries = Stmt::<D>::new(sql)
            .uuid(Some(webhook_id))
            .value(filter.status.map(DeliveryStatus::as_str))
            .page(page)
            .fetch_mapped(&self.db, delivery_from_row)
            .await?;
        let page = Page::from_rows(deliveries, page, |d| d.id);
        Ok(Page { items: self.with_attempts(page.items).await?, next_cursor: page.next_cursor })
    }

    async fn redeliver(
        &self,
        webhook_id: Uuid,
        delivery_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<Redelivery>, DomainError> {
        let more = match D::KIND {
            Kind::Postgres => "GREATEST(max_attempts, attempts + 1)",
            Kind::Sqlite => "MAX(max_attempts, attempts + 1)",
        };
        let done = Stmt::<D>::new(format!(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $3, max_attempts = {more}
             WHERE id = $1 AND webhook_id = $2 AND (lease_until IS NULL OR lease_until < $3)"
        ))
        .uuid(Some(delivery_id))
        .uuid(Some(webhook_id))
        .time(Some(now))
        .execute(&self.db)
        .await?;
        let delivery = self.delivery(webhook_id, delivery_id).await?;
        Ok(delivery.map(|d| if done == 1 { Redelivery::Scheduled(d) } else { Redelivery::InFlight }))
    }
}
