//! A `DeliveryQueue` in memory, holding deliveries a test adds directly (there is no outbox
//! here, so `fan_out` finds nothing): due ones are leased to one dispatcher at a time, and each
//! recorded attempt is kept with its verdict.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rdev_api::{
    domain::{AttemptVerdict, DeliveryAttempt, DomainError, DueDelivery, WebhookEvent, WebhookSecret},
    ports::DeliveryQueue,
};
use uuid::Uuid;

use super::Watched;

#[derive(Default)]
pub struct MemoryDeliveries {
    pub state: Watched<Vec<Slot>>,
}

pub struct Slot {
    pub due: DueDelivery,
    /// `None` once it ended (delivered or given up).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub claimed_by: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    pub attempts: Vec<(DeliveryAttempt, AttemptVerdict)>,
}

impl Slot {
    fn due_at(&self, now: DateTime<Utc>) -> bool {
        self.next_attempt_at.is_some_and(|at| at <= now) && self.lease_until.is_none_or(|lease| lease < now)
    }
}

impl MemoryDeliveries {
    /// Adds a delivery due at `at`, allowed `max_attempts`; returns its id.
    pub fn add(&self, secret: &WebhookSecret, max_attempts: u32, at: DateTime<Utc>) -> Uuid {
        let id = Uuid::new_v4();
        let due = DueDelivery {
            id,
            webhook_id: Uuid::new_v4(),
            url: "https://hooks.example.com/in".into(),
            secret: secret.clone(),
            event: WebhookEvent::CommandSucceeded,
            payload: format!(r#"{{"type":"command.succeeded","data":{{"id":"{id}"}}}}"#),
            traceparent: None,
            attempt: 1,
            max_attempts,
        };
        self.state.change(|slots| {
            slots.push(Slot { due, next_attempt_at: Some(at), claimed_by: None, lease_until: None, attempts: vec![] })
        });
        id
    }

    /// The verdicts recorded for delivery `id`, in order.
    pub fn verdicts(&self, id: Uuid) -> Vec<AttemptVerdict> {
        self.state.read(|slots| slot(slots, id).attempts.iter().map(|(_, verdict)| *verdict).collect())
    }

    /// Waits until every delivery has ended.
    pub async fn wait_all_ended(&self) {
        self.state.wait_until("every delivery ended", |slots| slots.iter().all(|s| s.next_attempt_at.is_none())).await
    }

    pub async fn wait_attempts(&self, id: Uuid, n: usize) {
        self.state.wait_until(&format!("{n} attempts recorded"), |slots| slot(slots, id).attempts.len() >= n).await
    }
}

fn slot(slots: &[Slot], id: Uuid) -> &Slot {
    slots.iter().find(|s| s.due.id == id).expect("a delivery this test added")
}

#[async_trait]
impl DeliveryQueue for MemoryDeliveries {
    async fn fan_out(&self, _max_attempts: u32, _now: DateTime<Utc>, _limit: u32) -> Result<usize, DomainError> {
        Ok(0)
    }

    async fn claim(
        &self,
        worker: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DueDelivery>, DomainError> {
        Ok(self.state.change(|slots| {
            let mut due: Vec<&mut Slot> = slots.iter_mut().filter(|s| s.due_at(now)).collect();
            due.sort_by_key(|s| s.next_attempt_at);
            due.into_iter()
                .take(limit as usize)
                .map(|s| {
                    s.claimed_by = Some(worker.to_owned());
                    s.lease_until = Some(lease_until);
                    DueDelivery { attempt: s.attempts.len() as u32 + 1, ..s.due.clone() }
                })
                .collect()
        }))
    }

    async fn record(
        &self,
        delivery_id: Uuid,
        worker: &str,
        attempt: &DeliveryAttempt,
        verdict: AttemptVerdict,
    ) -> Result<bool, DomainError> {
        Ok(self.state.change(|slots| {
            let Some(s) = slots.iter_mut().find(|s| s.due.id == delivery_id && s.claimed_by.as_deref() == Some(worker))
            else {
                return false;
            };
            s.attempts.push((attempt.clone(), verdict));
            s.next_attempt_at = match verdict {
                AttemptVerdict::RetryAt(at) => Some(at),
                AttemptVerdict::Delivered | AttemptVerdict::GaveUp => None,
            };
            s.claimed_by = None;
            s.lease_until = None;
            true
        }))
    }

    async fn purge(&self, _before: DateTime<Utc>) -> Result<u64, DomainError> {
        Ok(0)
    }

    async fn next_due(&self, _now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, DomainError> {
        Ok(self.state.read(|slots| {
            slots
                .iter()
                .filter_map(|s| Some(s.next_attempt_at?.max(s.lease_until.unwrap_or(DateTime::<Utc>::MIN_UTC))))
                .min()
        }))
    }
}
