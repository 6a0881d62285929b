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

#[async_trait]
pub trait RateLimiter: Send + Sync {
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
