//! `Idempotency-Key`'s rules: the first request of a key reserves it (on every replica at once)
//! before anything runs; a repeat of the same request replays its answer once there is one, and
//! is refused while there is not; the key used for another request is refused.

use std::{sync::Arc, time::Duration};

use uuid::Uuid;

use crate::{
    domain::{DomainError, IDEMPOTENCY_KEY_RETENTION, IdempotencyKey, KeyRecord, StoredReply, fingerprint},
    ports::{Clock, IdempotencyStore},
};

pub struct IdempotencyService {
    store: Arc<dyn IdempotencyStore>,
    clock: Arc<dyn Clock>,
}

/// A request under a key, as far as idempotency cares.
pub struct KeyedRequest<'a> {
    /// The API key; keys of different API keys never meet.
    pub owner: Option<Uuid>,
    pub key: IdempotencyKey,
    pub method: &'a str,
    pub path: &'a str,
    /// The body as parsed and written back.
    pub body: &'a str,
    /// How long answering it may take: past that, its reservation counts as abandoned.
    pub hold: Duration,
}

/// What to do with a keyed request.
pub enum Begun {
    /// Run it, then answer through the reservation.
    Run(Reservation),
    /// It ran before: send this answer again.
    Replay(StoredReply),
}

/// The key held by the request running now. Dropped without an answer (the request failed or
/// its client went away), the key is given up so that a retry may run.
pub struct Reservation {
    store: Arc<dyn IdempotencyStore>,
    owner: Uuid,
    key: IdempotencyKey,
    answered: bool,
}

impl Reservation {
    /// Stores the answer for the repeats. A failure to store it is logged, not returned: the
    /// request itself succeeded, and a repeat meets the reservation's lock instead.
    pub async fn complete(mut self, reply: &StoredReply) {
        self.answered = true;
        if let Err(error) = self.store.complete(self.owner, self.key.as_str(), reply).await {
            tracing::warn!(%error, "could not store the answer of an Idempotency-Key");
        }
    }
}

impl Reservation {
    /// Gives the key up now (the request was refused or failed), so that a retry right after
    /// may use it.
    pub async fn release(mut self) {
        self.answered = true;
        if let Err(error) = self.store.release(self.owner, self.key.as_str()).await {
            tracing::warn!(%error, "could not release an Idempotency-Key; it frees itself when its lock ends");
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let (store, owner, key) = (self.store.clone(), self.owner, self.key.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = store.release(owner, key.as_str()).await {
                    tracing::warn!(%error, "could not release an Idempotency-Key; it frees itself when its lock ends");
                }
            });
        }
    }
}

impl IdempotencyService {
    pub fn new(store: Arc<dyn IdempotencyStore>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    pub async fn begin(&self, request: KeyedRequest<'_>) -> Result<Begun, DomainError> {
        let fingerprint = fingerprint(request.method, request.path, request.body);
        let owner = request.owner.unwrap_or(Uuid::nil());
        let now = self.clock.now();
        let hold = chrono::TimeDelta::from_std(request.hold).unwrap_or(chrono::TimeDelta::hours(1));
        let record = self
            .store
            .reserve(owner, request.key.as_str(), &fingerprint, now, now + hold, now - IDEMPOTENCY_KEY_RETENTION)
            .await?;
        match record {
            None => Ok(Begun::Run(Reservation { store: self.store.clone(), owner, key: request.key, answered: false })),
            Some(KeyRecord { fingerprint: other, .. }) if other != fingerprint => {
                Err(DomainError::IdempotencyKeyReused)
            }
            Some(KeyRecord { reply: Some(reply), .. }) => Ok(Begun::Replay(reply)),
            Some(KeyRecord { reply: None, .. }) => Err(DomainError::Conflict(
                "a request with this Idempotency-Key is still running; send it again once it has finished".into(),
            )),
        }
    }

    /// Forgets keys past their retention; how many.
    pub async fn purge(&self) -> Result<u64, DomainError> {
        self.store.purge(self.clock.now() - IDEMPOTENCY_KEY_RETENTION).await
    }
}
