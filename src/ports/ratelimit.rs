//! The shared rate-limit counter: one sliding window per key, held where every replica sees it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The outcome of one request against its key's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    pub limit: u32,
    /// Requests left in the window after this one.
    pub remaining: u32,
    /// Seconds until the oldest request in the window leaves it and frees a slot.
    pub reset_secs: u32,
}

/// Budget taken ahead of use: `granted` hits recorded in the second `take` was given (0 when
/// none is left), `used` hits in the window after them, the oldest in `oldest_second`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub granted: u32,
    pub used: u32,
    pub oldest_second: i64,
}

#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Whether `take` grants more than one hit at a time, so that a replica can admit requests
    /// from a lease without a round trip each. Stores next to the process need not.
    fn leases(&self) -> bool {
        false
    }

    /// Records up to `want` hits of `key_id` in the second of `now`, as many as the window has
    /// room for under `limit`, atomically across replicas. Asked only of a counter whose
    /// `leases()` is true; the others are asked for a `hit` per request.
    async fn take(
        &self,
        key_id: Uuid,
        want: u32,
        limit: u32,
        window_secs: u32,
        now: DateTime<Utc>,
    ) -> Result<Grant, crate::domain::DomainError> {
        let _ = (key_id, want, limit, window_secs, now);
        Err(crate::domain::DomainError::internal(anyhow::anyhow!("this rate-limit counter does not lease")))
    }

    /// Takes back `count` hits recorded in `second` that were never used.
    async fn give_back(&self, key_id: Uuid, count: u32, second: i64) -> Result<(), crate::domain::DomainError> {
        let _ = (key_id, count, second);
        Ok(())
    }

    /// Counts one request of `key_id` at `now` if the last `window_secs` hold fewer than `limit`,
    /// atomically across replicas. Errors are `Unavailable` when the store cannot be reached.
    async fn hit(
        &self,
        key_id: Uuid,
        limit: u32,
        window_secs: u32,
        now: DateTime<Utc>,
    ) -> Result<RateDecision, crate::domain::DomainError>;

    /// Deletes counts older than `before`, which no window needs any more. Returns how many.
    async fn purge(&self, before: DateTime<Utc>) -> Result<u64, crate::domain::DomainError>;
}

impl RateDecision {
    /// From the window's state after the hit: `used` requests in it, the oldest in `oldest_second`.
    pub fn from_window(
        allowed: bool,
        limit: u32,
        used: u32,
        oldest_second: i64,
        window_secs: u32,
        now: DateTime<Utc>,
    ) -> Self {
        let frees_at = oldest_second + i64::from(window_secs);
        let reset_secs = u32::try_from((frees_at - now.timestamp()).max(1)).unwrap_or(window_secs);
        Self { allowed, limit, remaining: limit.saturating_sub(used), reset_secs }
    }
}
