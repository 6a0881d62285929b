//! Webhooks: the subscriptions and their deliveries (`WebhookRepo`, for the API), the delivery
//! queue the dispatchers of every replica share (`DeliveryQueue`), and the HTTP client that
//! sends one signed request (`WebhookSender`).
//!
//! Events enter the outbox in the same transaction as the final state of the command that
//! raised them (see `CommandQueue::finish` and `AuditLog::record`), so a crash loses none.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{
    AttemptVerdict, Delivery, DeliveryAttempt, DeliveryFilter, DomainError, DueDelivery, Page, PageRequest, Webhook,
    WebhookSecret,
};

#[async_trait]
pub trait WebhookRepo: Send + Sync {
    async fn create(&self, webhook: &Webhook, secret: &WebhookSecret) -> Result<(), DomainError>;

    async fn get(&self, id: Uuid) -> Result<Option<Webhook>, DomainError>;

    /// Oldest first.
    async fn list(&self, page: &PageRequest) -> Result<Page<Webhook>, DomainError>;

    /// Stores the changed fields (url, description, events, enabled, updated_at); `false` if it is gone.
    async fn update(&self, webhook: &Webhook) -> Result<bool, DomainError>;

    /// Deletes the webhook with its deliveries; `false` if there was none.
    async fn delete(&self, id: Uuid) -> Result<bool, DomainError>;

    /// The webhook's deliveries, newest first, each with its attempts.
    async fn deliveries(
        &self,
        webhook_id: Uuid,
        filter: &DeliveryFilter,
        page: &PageRequest,
    ) -> Result<Page<Delivery>, DomainError>;

    /// Makes a delivery due at `now` with room for one more attempt, whatever its status, unless
    /// an attempt of it is in flight. `None` if the webhook has no such delivery.
    async fn redeliver(
        &self,
        webhook_id: Uuid,
        delivery_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Option<Redelivery>, DomainError>;
}

/// What a redelivery did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redelivery {
    /// The delivery is due now, with one more attempt allowed.
    Scheduled(Delivery),
    /// An attempt of it is in flight (a dispatcher holds its lease); nothing changed.
    InFlight,
}

#[async_trait]
pub trait DeliveryQueue: Send + Sync {
    /// Turns up to `limit` outbox events into one pending delivery per enabled webhook that
    /// subscribed to them (and existed when they happened), each allowed `max_attempts`.
    /// Returns how many events it handled; replicas never handle the same event twice.
    async fn fan_out(&self, max_attempts: u32, now: DateTime<Utc>, limit: u32) -> Result<usize, DomainError>;

    /// Takes up to `limit` due deliveries for `worker` until `lease_until`, atomically across
    /// replicas: a delivery is sent by one dispatcher at a time. Deliveries of disabled webhooks
    /// wait, and go out when it is enabled again.
    async fn claim(
        &self,
        worker: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DueDelivery>, DomainError>;

    /// Records an attempt and what follows from it, and releases the claim. `false` if the claim
    /// was lost meanwhile (or the webhook deleted); nothing is written then.
    async fn record(
        &self,
        delivery_id: Uuid,
        worker: &str,
        attempt: &DeliveryAttempt,
        verdict: AttemptVerdict,
    ) -> Result<bool, DomainError>;

    /// Deletes finished deliveries (with their attempts) created before `before`, and the events
    /// no delivery refers to any more. Pending work is never touched. Returns deliveries deleted.
    async fn purge(&self, before: DateTime<Utc>) -> Result<u64, DomainError>;

    /// When work is next due: now if events wait for fan-out, else the earliest pending attempt
    /// (or lease expiry); `None` when nothing is pending.
    async fn next_due(&self, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, DomainError>;
}

/// One signed request, ready to go.
#[derive(Debug, Clone)]
pub struct WebhookRequest {
    pub url: String,
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature` and the content type.
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

/// What came back: a status (any, 2xx or not), or why none came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookResponse {
    pub status_code: Option<u16>,
    pub error: Option<String>,
    /// The first bytes of the body, lossily decoded.
    pub body: Option<String>,
}

#[async_trait]
pub trait WebhookSender: Send + Sync {
    /// Sends once, within the sender's timeout; never follows redirects.
    async fn send(&self, request: &WebhookRequest) -> WebhookResponse;
}
