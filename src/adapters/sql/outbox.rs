//! The webhook outbox: the event insert other repositories make inside their own transactions,
//! and the fan-out of events into deliveries.
//!
//! An event goes in only while some webhook is enabled, so with none an event costs no row; who
//! receives it is the domain's rule (`Webhook::receives`), applied at fan-out. Fan-out takes its
//! events with `FOR UPDATE SKIP LOCKED` on Postgres (dispatchers on every replica share the work,
//! never the same event) and under the write lock on SQLite.

use chrono::{DateTime, Utc};

use uuid::Uuid;

use super::{
    dialect::{Db, Dialect, Kind, Stmt, Tx, begin, commit},
    errors::corrupt,
    values::Row,
    webhooks::{WEBHOOK_COLUMNS, webhook_from_row},
};
use crate::domain::{DomainError, OutboxEvent, Webhook, WebhookEvent};

/// The outbox insert, with its parameters numbered from `$first` (so on Postgres it can follow
/// another statement's in one data-modifying CTE). Bind its values with `bind_event`.
pub(super) fn publish_sql(first: usize) -> String {
    let [id, event, payload, traceparent, at] = std::array::from_fn(|i| format!("${}", first + i));
    format!(
        "INSERT INTO webhook_events (id, event, payload, traceparent, occurred_at)
         SELECT {id}, {event}, {payload}, {traceparent}, {at} WHERE EXISTS (SELECT 1 FROM webhooks WHERE enabled)
         ON CONFLICT (id) DO NOTHING"
    )
}

/// Binds an event to `publish_sql`'s parameters: id, event, payload, traceparent, occurred_at.
pub(super) fn bind_event<D: Dialect>(query: Stmt<D>, event: &OutboxEvent, traceparent: Option<String>) -> Stmt<D> {
    query
        .uuid(Some(event.id))
        .value(event.event.as_str())
        .value(event.payload.clone())
        .value(traceparent)
        .time(Some(event.occurred_at))
}

/// Puts `event` into the outbox inside the caller's transaction, in the trace of the request.
pub(super) async fn publish<D: Dialect>(tx: &mut Tx<D>, event: &OutboxEvent) -> Result<(), DomainError> {
    publish_traced(tx, event, crate::telemetry::propagation::current_traceparent()).await
}

/// `publish` with the trace given, for writers that run outside the request's span.
pub(super) async fn publish_traced<D: Dialect>(
    tx: &mut Tx<D>,
    event: &OutboxEvent,
    traceparent: Option<String>,
) -> Result<(), DomainError> {
    bind_event(Stmt::<D>::new(publish_sql(1)), event, traceparent).execute(tx).await?;
    Ok(())
}

/// Whether any webhook is enabled, asked only when `needed`: one look for a batch of writes.
pub(super) async fn any_enabled<D: Dialect>(tx: &mut Tx<D>, needed: bool) -> Result<bool, DomainError> {
    if !needed {
        return Ok(false);
    }
    let row = Stmt::<D>::new("SELECT EXISTS (SELECT 1 FROM webhooks WHERE enabled) AS any").fetch_one(tx).await?;
    row.get("any")
}

/// An event not fanned out yet.
struct Pending {
    id: Uuid,
    event: WebhookEvent,
    occurred_at: DateTime<Utc>,
}

fn pending_from_row(row: &impl Row) -> Result<Pending, DomainError> {
    let event: String = row.get("event")?;
    Ok(Pending {
        id: row.required_uuid("id")?,
        event: WebhookEvent::parse(&event).ok_or_else(|| corrupt("webhook event", &event))?,
        occurred_at: row.required_time("occurred_at")?,
    })
}

/// Turns up to `limit` events into one pending delivery per webhook that receives them; an
/// event nobody receives is deleted. Returns how many events it handled.
pub(super) async fn fan_out<D: Dialect>(
    db: &Db<D>,
    max_attempts: u32,
    now: DateTime<Utc>,
    limit: u32,
) -> Result<usize, DomainError> {
    // A plain read first: the common answer is "nothing", which needs no transaction (or lock).
    let waiting = Stmt::<D>::new("SELECT EXISTS (SELECT 1 FROM webhook_events WHERE NOT fanned_out) AS waiting")
        .fetch_one(db)
        .await?;
    if !waiting.get::<bool>("waiting")? {
        return Ok(0);
    }
    let lock = if D::KIND == Kind::Postgres { " FOR UPDATE SKIP LOCKED" } else { "" };
    let mut tx = begin(db).await?;
    let events = Stmt::<D>::new(format!(
        "SELECT id, event, occurred_at FROM webhook_events WHERE NOT fanned_out ORDER BY occurred_at LIMIT $1{lock}"
    ))
    .value(i64::from(limit))
    .fetch_mapped(&mut tx, pending_from_row)
    .await?;
    if events.is_empty() {
        return Ok(0);
    }
    let webhooks = Stmt::<D>::new(format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE enabled"))
        .fetch_mapped(&mut tx, webhook_from_row)
        .await?;
    for event in &events {
        let receivers: Vec<&Webhook> = webhooks.iter().filter(|w| w.receives(event.event, event.occurred_at)).collect();
        for webhook in &receivers {
            Stmt::<D>::new(
                "INSERT INTO webhook_deliveries (id, webhook_id, event_id, event, status, max_attempts, next_attempt_at, created_at)
                 VALUES ($1, $2, $3, $4, 'pending', $5, $6, $6) ON CONFLICT (webhook_id, event_id) DO NOTHING",
            )
            .uuid(Some(Uuid::new_v4()))
            .uuid(Some(webhook.id))
            .uuid(Some(event.id))
            .value(event.event.as_str())
            .value(i32::try_from(max_attempts).unwrap_or(i32::MAX))
            .time(Some(now))
            .execute(&mut tx)
            .await?;
        }
        let done = if receivers.is_empty() {
            "DELETE FROM webhook_events WHERE id = $1"
        } else {
            "UPDATE webhook_events SET fanned_out = TRUE WHERE id = $1"
        };
        Stmt::<D>::new(done).uuid(Some(event.id)).execute(&mut tx).await?;
    }
    commit(tx).await?;
    Ok(events.len())
}
