//! Stored values of webhooks and deliveries shared by both SQL adapters, and the decisions both
//! make the same way (which webhooks receive an event).

use uuid::Uuid;

use crate::{
    adapters::db::corrupt,
    domain::{
        AttemptVerdict, Delivery, DeliveryAttempt, DeliveryStatus, DomainError, Webhook, WebhookEvent, WebhookSecret,
    },
};
use chrono::{DateTime, Utc};

pub(crate) fn events_to_json(events: &[WebhookEvent]) -> String {
    serde_json::to_string(events).unwrap_or_else(|_| "[]".into())
}

pub(crate) fn events_from_json(raw: &str) -> Result<Vec<WebhookEvent>, DomainError> {
    serde_json::from_str(raw).map_err(|e| corrupt("webhook events", e))
}

pub(crate) fn event(raw: &str) -> Result<WebhookEvent, DomainError> {
    WebhookEvent::parse(raw).ok_or_else(|| corrupt("webhook event", raw))
}

pub(crate) fn status(raw: &str) -> Result<DeliveryStatus, DomainError> {
    DeliveryStatus::parse(raw).ok_or_else(|| corrupt("delivery status", raw))
}

pub(crate) fn secret(raw: String) -> Result<WebhookSecret, DomainError> {
    WebhookSecret::from_stored(raw).ok_or_else(|| corrupt("webhook secret", "not whsec_<base64>"))
}

pub(crate) fn count(raw: i64) -> u32 {
    u32::try_from(raw.max(0)).unwrap_or(u32::MAX)
}

/// Whether `webhook` receives `event`: enabled, subscribed, and already there when it happened.
pub(crate) fn receives(webhook: &Webhook, event: WebhookEvent, occurred_at: DateTime<Utc>) -> bool {
    webhook.enabled && webhook.events.contains(&event) && webhook.created_at <= occurred_at
}

/// The delivery's columns after an attempt: status, when the next is due, when it was delivered.
pub(crate) struct AfterAttempt {
    pub status: DeliveryStatus,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
}

impl AfterAttempt {
    pub(crate) fn of(verdict: AttemptVerdict, attempt: &DeliveryAttempt) -> Self {
        let (status, next_attempt_at, delivered_at) = match verdict {
            AttemptVerdict::Delivered => (DeliveryStatus::Succeeded, None, Some(attempt.at)),
            AttemptVerdict::RetryAt(at) => (DeliveryStatus::Pending, Some(at), None),
            AttemptVerdict::GaveUp => (DeliveryStatus::Failed, None, None),
        };
        Self { status, next_attempt_at, delivered_at }
    }
}

/// Hands each attempt (read in order) to its delivery.
pub(crate) fn attach(deliveries: &mut [Delivery], attempts: impl IntoIterator<Item = (Uuid, DeliveryAttempt)>) {
    for (id, attempt) in attempts {
        if let Some(delivery) = deliveries.iter_mut().find(|d| d.id == id) {
            delivery.attempts.push(attempt);
        }
    }
}
