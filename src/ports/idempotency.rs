//! Where `Idempotency-Key` reservations and the answers they replay are kept, shared by every
//! replica.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{DomainError, KeyRecord, StoredReply};

#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Reserves `key` of the API key `owner` for the request `fingerprint`, atomically across
    /// replicas: `None` when this call now holds it, until `locked_until` at least (a new key, one
    /// older than `forget_before`, or one whose holder let its lock run out on this same
    /// request); else what the key holds.
    async fn reserve(
        &self,
        owner: Uuid,
        key: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
        locked_until: DateTime<Utc>,
        forget_before: DateTime<Utc>,
    ) -> Result<Option<KeyRecord>, DomainError>;

    /// Stores the answer of the request holding the reservation.
    async fn complete(&self, owner: Uuid, key: &str, reply: &StoredReply) -> Result<(), DomainError>;

    /// Gives a reservation up without an answer (the request failed): the key may be used again.
    async fn release(&self, owner: Uuid, key: &str) -> Result<(), DomainError>;

    /// Forgets keys reserved before `before`; how many.
    async fn purge(&self, before: DateTime<Utc>) -> Result<u64, DomainError>;
}
