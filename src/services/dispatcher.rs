//! The webhook dispatcher: turns outbox events into deliveries, claims due ones with a lease,
//! signs and sends each, records every attempt, and schedules the next with backoff and jitter
//! until one succeeds or the schedule runs out. `RDEV_WEBHOOK_WORKERS` attempts run at once per
//! replica; replicas share the work through the database.
//!
//! A delivery is at least once: if a replica dies between sending and recording, its lease
//! runs out and another replica sends again, with the same `webhook-id` so receivers can tell.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use rand::RngExt as _;
use tokio::{
    sync::{Notify, watch},
    task::JoinSet,
};
use tracing::Instrument as _;

use crate::{
    domain::{AttemptVerdict, Delivery, DeliveryAttempt, DueDelivery},
    ports::{Clock, DeliveryQueue, WebhookRequest, WebhookSender},
    telemetry::{metrics::WEBHOOK_DELIVERIES_TOTAL, propagation::adopt_traceparent},
};

/// Longest an idle dispatcher goes without looking for work other replicas made due.
const POLL: Duration = Duration::from_secs(1);
/// Shortest pause between rounds that found nothing to claim, so a due time that some other
/// replica's lease blocks cannot spin the loop.
const MIN_PAUSE: Duration = Duration::from_millis(10);
/// Shortest time between two rounds: under load every finished command wakes the dispatcher,
/// and a round per command would compete with requests for the database. Deliveries wait at
/// most this long for the next round.
const MIN_ROUND_GAP: Duration = Duration::from_millis(20);
/// Outbox events turned into deliveries per round.
const FAN_OUT_BATCH: u32 = 100;
/// How much longer than the request timeout a claim lasts: time to record the attempt.
const LEASE_MARGIN: Duration = Duration::from_secs(30);
/// Each wait of the schedule is stretched or shrunk by up to this fraction, at random, so that
/// deliveries that failed together do not all come back at the same instant.
const JITTER: f64 = 0.2;

#[derive(Debug, Clone)]
pub struct DispatchSettings {
    /// The waits before the second, third, … attempt.
    pub retry_schedule: Vec<Duration>,
    pub timeout: Duration,
    /// Attempts in flight at once on this replica; 0 disables the dispatcher here.
    pub concurrency: usize,
}

impl DispatchSettings {
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.retry_schedule.len() + 1).unwrap_or(u32::MAX)
    }

    /// When to try again after attempt number `attempt` (1-based) failed.
    fn retry_at(&self, attempt: u32, now: DateTime<Utc>) -> DateTime<Utc> {
        let index = (attempt.max(1) as usize - 1).min(self.retry_schedule.len().saturating_sub(1));
        let wait = self.retry_schedule.get(index).copied().unwrap_or(Duration::ZERO);
        let wait = wait.mul_f64(1.0 + rand::rng().random_range(-JITTER..=JITTER));
        now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX)
    }
}

/// Wakes the dispatcher of this replica when a webhook event may be waiting (a command
/// finished, a delivery was retried by hand), so it goes out at once instead of at the next
/// poll.
#[derive(Clone, Default)]
pub struct DispatchWake(Arc<Notify>);

impl DispatchWake {
    pub fn wake(&self) {
        self.0.notify_one();
    }

    async fn woken(&self) {
        self.0.notified().await;
    }
}

pub struct WebhookDispatcher {
    pub name: String,
    pub queue: Arc<dyn DeliveryQueue>,
    pub sender: Arc<dyn WebhookSender>,
    pub clock: Arc<dyn Clock>,
    pub settings: DispatchSettings,
    pub wake: DispatchWake,
}

impl WebhookDispatcher {
    /// Works until `stopping` turns true, then lets the attempts in flight finish.
    pub async fn run(self, mut stopping: watch::Receiver<bool>) {
        let this = Arc::new(self);
        let mut in_flight = JoinSet::new();
        while !*stopping.borrow() {
            let next_round = tokio::time::Instant::now() + MIN_ROUND_GAP;
            let busy = this.round(&mut in_flight).await;
            if busy {
                continue;
            }
            let pause = this.pause().await;
            tokio::select! {
                () = this.wake.woken() => {}
                () = tokio::time::sleep(pause) => {}
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
                _ = stopping.changed() => {}
            }
            tokio::time::sleep_until(next_round).await;
        }
        while in_flight.join_next().await.is_some() {}
    }

    /// One pass: fan out new events, claim what there is room for. `true` if there may be more
    /// to do right away.
    async fn round(self: &Arc<Self>, in_flight: &mut JoinSet<()>) -> bool {
        let now = self.clock.now();
        let fanned = match self.queue.fan_out(self.settings.max_attempts(), now, FAN_OUT_BATCH).await {
            Ok(n) => n,
            Err(error) => {
                tracing::warn!(%error, "could not turn webhook events into deliveries; will retry");
                0
            }
        };
        let room = self.settings.concurrency.saturating_sub(in_flight.len());
        if room == 0 {
            // Full: wait for an attempt to end rather than spin.
            let _ = in_flight.join_next().await;
            return true;
        }
        let lease_until = now + chrono::Duration::from_std(self.settings.timeout + LEASE_MARGIN).unwrap_or_default();
        let limit = u32::try_from(room).unwrap_or(u32::MAX);
        let claimed = match self.queue.claim(&self.name, now, lease_until, limit).await {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(%error, "could not claim webhook deliveries; will retry");
                Vec::new()
            }
        };
        let full = claimed.len() == room;
        for delivery in claimed {
            let this = self.clone();
            in_flight.spawn(async move { this.attempt(delivery).await });
        }
        fanned == FAN_OUT_BATCH as usize || full
    }

    /// How long to wait before the next round: until the next delivery is due, at most `POLL`.
    async fn pause(&self) -> Duration {
        let now = self.clock.now();
        let due = match self.queue.next_due(now).await {
            Ok(due) => due,
            Err(error) => {
                tracing::warn!(%error, "could not look up the next webhook delivery");
                None
            }
        };
        let until_due = due.map_or(POLL, |due| (due - now).to_std().unwrap_or(Duration::ZERO));
        until_due.clamp(MIN_PAUSE, POLL)
    }

    /// Signs and sends one delivery, then records the attempt and what comes next.
    async fn attempt(&self, delivery: DueDelivery) {
        let host = url::Url::parse(&delivery.url).ok().and_then(|u| u.host_str().map(str::to_owned));
        let span = tracing::info_span!(
            "webhook.deliver",
            otel.kind = "client",
            webhook.id = %delivery.webhook_id,
            webhook.delivery_id = %delivery.id,
            webhook.event = delivery.event.as_str(),
            webhook.attempt = delivery.attempt,
            http.request.method = "POST",
            server.address = host.as_deref().unwrap_or(""),
            http.response.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        if let Some(traceparent) = &delivery.traceparent {
            adopt_traceparent(&span, traceparent);
        }
        self.send_and_record(delivery).instrument(span).await;
    }

    async fn send_and_record(&self, delivery: DueDelivery) {
        let at = self.clock.now();
        let message_id = Delivery::message_id(delivery.id);
        let timestamp = at.timestamp();
        let signature = delivery.secret.sign(&message_id, timestamp, delivery.payload.as_bytes());
        let request = WebhookRequest {
            url: delivery.url.clone(),
            headers: vec![
                ("content-type", "application/json".into()),
                ("webhook-id", message_id),
                ("webhook-timestamp", timestamp.to_string()),
                ("webhook-signature", signature),
            ],
            body: delivery.payload.clone(),
        };
        let started = tokio::time::Instant::now();
        let response = self.sender.send(&request).await;
        let attempt = DeliveryAttempt {
            attempt: delivery.attempt,
            at,
            status_code: response.status_code,
            latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            error: response.error,
            response_body: response.body,
        };
        let span = tracing::Span::current();
        if let Some(code) = attempt.status_code {
            span.record("http.response.status_code", code);
        }
        let verdict = if attempt.succeeded() {
            AttemptVerdict::Delivered
        } else if delivery.attempt >= delivery.max_attempts {
            AttemptVerdict::GaveUp
        } else {
            AttemptVerdict::RetryAt(self.settings.retry_at(delivery.attempt, self.clock.now()))
        };
        let outcome = match verdict {
            AttemptVerdict::Delivered => "delivered",
            AttemptVerdict::RetryAt(_) => "retrying",
            AttemptVerdict::GaveUp => "failed",
        };
        if verdict != AttemptVerdict::Delivered {
            let why = attempt.error.clone().unwrap_or_else(|| format!("HTTP {}", attempt.status_code.unwrap_or(0)));
            span.record("error.type", why.as_str());
            tracing::info!(error = %why, outcome, "webhook attempt failed");
        }
        metrics::counter!(WEBHOOK_DELIVERIES_TOTAL, "outcome" => outcome).increment(1);
        match self.queue.record(delivery.id, &self.name, &attempt, verdict).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!("delivery claim lost (or its webhook deleted) before the attempt was recorded"),
            Err(error) => tracing::error!(%error, "could not record a webhook attempt; its lease will bring it back"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_follow_the_schedule_with_bounded_jitter() {
        let settings = DispatchSettings {
            retry_schedule: vec![Duration::from_secs(5), Duration::from_secs(300)],
            timeout: Duration::from_secs(10),
            concurrency: 1,
        };
        assert_eq!(settings.max_attempts(), 3);
        let now = Utc::now();
        for _ in 0..100 {
            let first = (settings.retry_at(1, now) - now).num_milliseconds();
            assert!((4000..=6000).contains(&first), "{first}");
            let second = (settings.retry_at(2, now) - now).num_milliseconds();
            assert!((240_000..=360_000).contains(&second), "{second}");
            // A manual retry beyond the schedule waits like the last step.
            let beyond = (settings.retry_at(7, now) - now).num_milliseconds();
            assert!((240_000..=360_000).contains(&beyond), "{beyond}");
        }
    }
}
