//! Rate-limit policy: each key's limit (its own, or the server default) over a one-minute
//! sliding window, and what to do when the shared counter cannot be reached.

use std::sync::Arc;

use crate::{
    domain::{ApiKey, DomainError},
    ports::{Clock, RateDecision, RateLimiter},
};

const WINDOW_SECS: u32 = 60;

pub struct RateLimitService {
    limiter: Arc<dyn RateLimiter>,
    clock: Arc<dyn Clock>,
    default_per_minute: u32,
    fail_open: bool,
}

impl RateLimitService {
    pub fn new(limiter: Arc<dyn RateLimiter>, clock: Arc<dyn Clock>, default_per_minute: u32, fail_open: bool) -> Self {
        Self { limiter, clock, default_per_minute, fail_open }
    }

    /// Forgets counts that have left every window; run now and then, off the request path.
    pub async fn purge_expired(&self) -> Result<u64, DomainError> {
        self.limiter.purge(self.clock.now() - chrono::Duration::seconds(i64::from(WINDOW_SECS))).await
    }

    /// Counts one request of `key`. `Ok(None)` when the counter is unreachable and the server is
    /// configured to fail open; `Unavailable` when it fails closed (the default).
    pub async fn check(&self, key: &ApiKey) -> Result<Option<RateDecision>, DomainError> {
        let limit = key.rate_limit_per_minute.unwrap_or(self.default_per_minute);
        match self.limiter.hit(key.id, limit, WINDOW_SECS, self.clock.now()).await {
            Ok(decision) => Ok(Some(decision)),
            Err(error) if self.fail_open => {
                tracing::warn!(%error, "rate limiter unreachable; allowing the request (RDEV_RATE_LIMIT_FAIL_OPEN)");
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use chrono::{DateTime, Utc};
    use uuid::Uuid;

    use super::*;
    use crate::{domain::Scope, ports::SystemClock};

    /// A counter whose database is down.
    struct Unreachable;

    #[async_trait]
    impl RateLimiter for Unreachable {
        async fn hit(&self, _: Uuid, _: u32, _: u32, _: DateTime<Utc>) -> Result<RateDecision, DomainError> {
            Err(DomainError::Unavailable("connection refused".into()))
        }

        async fn purge(&self, _: DateTime<Utc>) -> Result<u64, DomainError> {
            Err(DomainError::Unavailable("connection refused".into()))
        }
    }

    fn key() -> ApiKey {
        ApiKey::for_tests(vec![Scope::Admin])
    }

    #[tokio::test]
    async fn an_unreachable_counter_fails_closed_by_default_and_open_when_configured() {
        let closed = RateLimitService::new(Arc::new(Unreachable), Arc::new(SystemClock), 60, false);
        assert!(matches!(closed.check(&key()).await, Err(DomainError::Unavailable(_))));
        let open = RateLimitService::new(Arc::new(Unreachable), Arc::new(SystemClock), 60, true);
        assert!(matches!(open.check(&key()).await, Ok(None)));
    }
}
