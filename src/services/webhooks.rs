//! Managing webhooks and looking at their deliveries. Sending is the dispatcher's
//! (`services::dispatcher`); this service only wakes it when a delivery is made due by hand.

use std::sync::Arc;

use uuid::Uuid;

use super::DispatchWake;
use crate::{
    domain::{
        Delivery, DeliveryFilter, DomainError, FieldErrors, NewWebhook, Page, PageRequest, Webhook, WebhookChanges,
        WebhookEvent, WebhookSecret, webhook::check_url,
    },
    ports::{Clock, Redelivery, WebhookRepo},
};

const MAX_DESCRIPTION_CHARS: usize = 500;

pub struct WebhookService {
    repo: Arc<dyn WebhookRepo>,
    clock: Arc<dyn Clock>,
    allow_private: bool,
    /// Wakes this replica's dispatcher.
    wake: DispatchWake,
}

impl WebhookService {
    pub fn new(repo: Arc<dyn WebhookRepo>, clock: Arc<dyn Clock>, allow_private: bool, wake: DispatchWake) -> Self {
        Self { repo, clock, allow_private, wake }
    }

    /// Creates a webhook and its signing secret, which the caller shows once.
    pub async fn create(&self, new: NewWebhook) -> Result<(Webhook, WebhookSecret), DomainError> {
        let mut errors = FieldErrors::default();
        let url = self.check_url(&new.url, &mut errors);
        let description = check_description(new.description, &mut errors);
        let events = check_events(new.events.unwrap_or_else(|| WebhookEvent::ALL.to_vec()), &mut errors);
        errors.into_result()?;
        let now = self.clock.now();
        let webhook = Webhook {
            id: Uuid::new_v4(),
            url: url.unwrap_or_default(),
            description,
            events,
            enabled: new.enabled.unwrap_or(true),
            created_at: now,
            updated_at: now,
        };
        let secret = WebhookSecret::generate();
        self.repo.create(&webhook, &secret).await?;
        Ok((webhook, secret))
    }

    pub async fn get(&self, id: Uuid) -> Result<Webhook, DomainError> {
        self.repo.get(id).await?.ok_or_else(|| DomainError::not_found("webhook", id.to_string()))
    }

    pub async fn list(&self, page: &PageRequest) -> Result<Page<Webhook>, DomainError> {
        self.repo.list(page).await
    }

    pub async fn update(&self, id: Uuid, changes: WebhookChanges) -> Result<Webhook, DomainError> {
        let mut webhook = self.get(id).await?;
        let mut errors = FieldErrors::default();
        if let Some(url) = changes.url {
            webhook.url = self.check_url(&url, &mut errors).unwrap_or_default();
        }
        if let Some(description) = changes.description {
            webhook.description = check_description(description, &mut errors);
        }
        if let Some(events) = changes.events {
            webhook.events = check_events(events, &mut errors);
        }
        if let Some(enabled) = changes.enabled {
            webhook.enabled = enabled;
        }
        errors.into_result()?;
        webhook.updated_at = self.clock.now();
        if !self.repo.update(&webhook).await? {
            return Err(DomainError::not_found("webhook", id.to_string()));
        }
        Ok(webhook)
    }

    /// Deletes the webhook and its delivery history; pending deliveries are dropped.
    pub async fn delete(&self, id: Uuid) -> Result<(), DomainError> {
        if self.repo.delete(id).await? { Ok(()) } else { Err(DomainError::not_found("webhook", id.to_string())) }
    }

    pub async fn deliveries(
        &self,
        id: Uuid,
        filter: &DeliveryFilter,
        page: &PageRequest,
    ) -> Result<Page<Delivery>, DomainError> {
        self.get(id).await?;
        self.repo.deliveries(id, filter, page).await
    }

    /// Sends a delivery again now, whatever its status, with one more attempt allowed; the
    /// receiver sees the same `webhook-id` as before.
    /// `Conflict` while an attempt of it is in flight: its outcome is not known yet.
    pub async fn redeliver(&self, id: Uuid, delivery_id: Uuid) -> Result<Delivery, DomainError> {
        self.get(id).await?;
        match self.repo.redeliver(id, delivery_id, self.clock.now()).await? {
            None => Err(DomainError::not_found("delivery", delivery_id.to_string())),
            Some(Redelivery::InFlight) => {
                Err(DomainError::Conflict("an attempt of this delivery is in flight; try again when it ends".into()))
            }
            Some(Redelivery::Scheduled(delivery)) => {
                self.wake.wake();
                Ok(delivery)
            }
        }
    }

    fn check_url(&self, raw: &str, errors: &mut FieldErrors) -> Option<String> {
        check_url(raw, self.allow_private).map_err(|message| errors.add("url", message)).ok()
    }
}

fn check_description(description: Option<String>, errors: &mut FieldErrors) -> Option<String> {
    let description = description.filter(|d| !d.is_empty());
    if description.as_ref().is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_CHARS) {
        errors.add("description", format!("must be at most {MAX_DESCRIPTION_CHARS} characters"));
    }
    description
}

/// At least one event; duplicates dropped, in a stable order.
fn check_events(mut events: Vec<WebhookEvent>, errors: &mut FieldErrors) -> Vec<WebhookEvent> {
    events.sort();
    events.dedup();
    if events.is_empty() {
        errors.add("events", "must name at least one event");
    }
    events
}
