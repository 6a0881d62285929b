//! Rate-limit policy: each key's limit (its own, or the server default) over a one-minute
//! sliding window, and what to do when the shared counter cannot be reached.
//!
//! Where the counter leases budget (Postgres, shared by replicas), a replica does not ask it
//! per request: it takes a few of a key's remaining hits for the current second at once (they
//! are counted in the database before any is used), admits that second's requests from them in
//! memory, and gives back what it did not use once the second is over. The bound is the
//! database's: no window of whole seconds ever holds more admitted requests than the limit,
//! since every admitted request was recorded in its own second first. A replica that dies with
//! a lease leaves its unused hits counted, which refuses a little early until they leave the
//! window, and never admits extra. A lease grows with what the key used in its last second
//! (twice that, plus one), capped at an eighth of the limit, so a key used by two replicas at
//! once is not starved by one of them.

use std::{collections::HashMap, sync::Arc, sync::Mutex};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{
    domain::{ApiKey, DomainError},
    ports::{Clock, Grant, RateDecision, RateLimiter},
};

const WINDOW_SECS: u32 = 60;
/// The most hits one lease takes.
const MAX_LEASE: u32 = 10_000;

pub struct RateLimitService {
    limiter: Arc<dyn RateLimiter>,
    clock: Arc<dyn Clock>,
    default_per_minute: u32,
    fail_open: bool,
    /// Each key's lease of the current second, where the counter leases.
    leases: Option<Mutex<HashMap<Uuid, Lease>>>,
    /// One lease taken at a time per key (striped by key): requests that find a key's lease
    /// used up wait for the one refill instead of each taking a lease, so a replica holds at
    /// most one lease's unused hits per key.
    refills: [tokio::sync::Mutex<()>; REFILL_STRIPES],
}

const REFILL_STRIPES: usize = 32;

/// Hits of one key taken for one second and not used yet.
#[derive(Debug, Clone, Copy)]
struct Lease {
    second: i64,
    left: u32,
    /// How many of its hits were used (for the next lease's size).
    used: u32,
    /// The window's count after the lease was taken, and its oldest second.
    window_used: u32,
    oldest_second: i64,
}

impl RateLimitService {
    pub fn new(limiter: Arc<dyn RateLimiter>, clock: Arc<dyn Clock>, default_per_minute: u32, fail_open: bool) -> Self {
        let leases = limiter.leases().then(|| Mutex::new(HashMap::new()));
        let refills = std::array::from_fn(|_| tokio::sync::Mutex::new(()));
        Self { limiter, clock, default_per_minute, fail_open, leases, refills }
    }

    /// Gives back the hits of leases whose second is over (run now and then: a key that went
    /// quiet gives back its last lease here).
    pub async fn return_unused(&self) {
        let Some(leases) = &self.leases else { return };
        let second = self.clock.now().timestamp();
        let stale: Vec<(Uuid, Lease)> = {
            let mut leases = leases.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let stale = leases.iter().filter(|(_, lease)| lease.second < second).map(|(k, l)| (*k, *l)).collect();
            leases.retain(|_, lease| lease.second >= second);
            stale
        };
        for (key, lease) in stale {
            self.give_back(key, lease).await;
        }
    }

    async fn give_back(&self, key: Uuid, lease: Lease) {
        if lease.left == 0 {
            return;
        }
        if let Err(error) = self.limiter.give_back(key, lease.left, lease.second).await {
            // Counted and unused: the key is refused a little early until they leave the window.
            tracing::warn!(%error, "could not give back unused rate-limit budget");
        }
    }

    /// Takes a lease for this second: the last second's lease (if any) is given back first.
    async fn lease(
        &self,
        leases: &Mutex<HashMap<Uuid, Lease>>,
        key: Uuid,
        limit: u32,
    ) -> Result<RateDecision, DomainError> {
        let now = self.clock.now();
        let second = now.timestamp();
        let (stale, last_used) = {
            let mut leases = leases.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            match leases.get(&key).copied() {
                Some(lease) if lease.second < second => {
                    leases.remove(&key);
                    (Some(lease), lease.used)
                }
                Some(lease) => (None, lease.used),
                None => (None, 0),
            }
        };
        if let Some(stale) = stale {
            self.give_back(key, stale).await;
        }
        let want = last_used.saturating_mul(2).saturating_add(1).min((limit / 8).max(1)).min(MAX_LEASE);
        let Grant { granted, used, oldest_second } = self.limiter.take(key, want, limit, WINDOW_SECS, now).await?;
        if granted == 0 {
            return Ok(RateDecision::from_window(false, limit, used, oldest_second, WINDOW_SECS, now));
        }
        let leftover = {
            let mut leases = leases.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let lease =
                leases.entry(key).or_insert(Lease { second, left: 0, used: 0, window_used: used, oldest_second });
            if lease.second == second {
                // Concurrent leases of one second add up.
                lease.left += granted - 1;
                lease.used += 1;
                lease.window_used = lease.window_used.max(used);
                return Ok(decision(limit, lease, now));
            }
            // A later second's lease got in meanwhile: this request uses one hit, the rest go back.
            Lease { second, left: granted - 1, used: 1, window_used: used, oldest_second }
        };
        self.give_back(key, leftover).await;
        Ok(RateDecision::from_window(true, limit, used, oldest_second, WINDOW_SECS, now))
    }

    /// Forgets counts that have left every window; run now and then, off the request path.
    pub async fn purge_expired(&self) -> Result<u64, DomainError> {
        self.limiter.purge(self.clock.now() - chrono::Duration::seconds(i64::from(WINDOW_SECS))).await
    }

    /// Counts one request of `key`. `Ok(None)` when the counter is unreachable and the server is
    /// configured to fail open; `Unavailable` when it fails closed (the default).
    pub async fn check(&self, key: &ApiKey) -> Result<Option<RateDecision>, DomainError> {
        let limit = key.rate_limit_per_minute.unwrap_or(self.default_per_minute);
        let counted = if let Some(leases) = &self.leases {
            match from_lease(leases, key.id, limit, self.clock.now()) {
                Some(decision) => Ok(decision),
                None => {
                    let stripe = key.id.as_u128() as usize % REFILL_STRIPES;
                    let _one_refill = self.refills[stripe].lock().await;
                    // Another request may have refilled it while this one waited.
                    match from_lease(leases, key.id, limit, self.clock.now()) {
                        Some(decision) => Ok(decision),
                        None => self.lease(leases, key.id, limit).await,
                    }
                }
            }
        } else {
            self.limiter.hit(key.id, limit, WINDOW_SECS, self.clock.now()).await
        };
        match counted {
            Ok(decision) => Ok(Some(decision)),
            Err(error) if self.fail_open => {
                tracing::warn!(%error, "rate limiter unreachable; allowing the request (RDEV_RATE_LIMIT_FAIL_OPEN)");
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }
}

/// What a request admitted from `lease` is told: the window's count as of the lease, less what
/// the lease still holds for this replica.
fn decision(limit: u32, lease: &Lease, now: DateTime<Utc>) -> RateDecision {
    let used = lease.window_used.saturating_sub(lease.left);
    RateDecision::from_window(true, limit, used, lease.oldest_second, WINDOW_SECS, now)
}

/// One request of `key` from its lease of this second, if it has one with hits left.
fn from_lease(leases: &Mutex<HashMap<Uuid, Lease>>, key: Uuid, limit: u32, now: DateTime<Utc>) -> Option<RateDecision> {
    let mut leases = leases.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let lease = leases.get_mut(&key).filter(|lease| lease.second == now.timestamp() && lease.left > 0)?;
    lease.left -= 1;
    lease.used += 1;
    Some(decision(limit, lease, now))
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

    /// A shared counter that leases, as Postgres does: hits per second, `take` and `give_back`.
    #[derive(Default)]
    struct LeasingCounter {
        seconds: Mutex<HashMap<i64, u32>>,
        takes: std::sync::atomic::AtomicU32,
    }

    #[async_trait]
    impl RateLimiter for LeasingCounter {
        fn leases(&self) -> bool {
            true
        }

        async fn hit(&self, _: Uuid, _: u32, _: u32, _: DateTime<Utc>) -> Result<RateDecision, DomainError> {
            unimplemented!("a leasing counter is asked for leases")
        }

        async fn take(
            &self,
            _: Uuid,
            want: u32,
            limit: u32,
            window: u32,
            now: DateTime<Utc>,
        ) -> Result<Grant, DomainError> {
            self.takes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut seconds = self.seconds.lock().unwrap();
            let second = now.timestamp();
            let used: u32 = seconds.iter().filter(|(s, _)| **s > second - i64::from(window)).map(|(_, n)| n).sum();
            let granted = want.min(limit.saturating_sub(used));
            *seconds.entry(second).or_default() += granted;
            Ok(Grant { granted, used: used + granted, oldest_second: second })
        }

        async fn give_back(&self, _: Uuid, count: u32, second: i64) -> Result<(), DomainError> {
            let mut seconds = self.seconds.lock().unwrap();
            let hits = seconds.entry(second).or_default();
            *hits = hits.saturating_sub(count);
            Ok(())
        }

        async fn purge(&self, _: DateTime<Utc>) -> Result<u64, DomainError> {
            Ok(0)
        }
    }

    /// A clock that moves when told.
    struct Tick(Mutex<DateTime<Utc>>);

    impl Clock for Tick {
        fn now(&self) -> DateTime<Utc> {
            *self.0.lock().unwrap()
        }
    }

    impl Tick {
        fn advance(&self, seconds: i64) {
            *self.0.lock().unwrap() += chrono::Duration::seconds(seconds);
        }
    }

    fn limited(limit: u32) -> ApiKey {
        let mut key = key();
        key.rate_limit_per_minute = Some(limit);
        key
    }

    async fn admitted(service: &RateLimitService, key: &ApiKey, requests: usize) -> usize {
        let mut admitted = 0;
        for _ in 0..requests {
            admitted += usize::from(service.check(key).await.unwrap().unwrap().allowed);
        }
        admitted
    }

    #[tokio::test]
    async fn two_replicas_leasing_never_admit_more_than_the_limit_and_ask_the_counter_rarely() {
        let counter = Arc::new(LeasingCounter::default());
        let clock = Arc::new(Tick(Mutex::new(Utc::now())));
        let a = RateLimitService::new(counter.clone(), clock.clone(), 600, false);
        let b = RateLimitService::new(counter.clone(), clock.clone(), 600, false);
        let key = limited(800);
        let mut total = 0;
        for _ in 0..100 {
            total += admitted(&a, &key, 3).await + admitted(&b, &key, 2).await;
        }
        assert_eq!(total, 500, "under the limit everything is admitted");
        let takes = counter.takes.load(std::sync::atomic::Ordering::Relaxed);
        assert!(takes <= 20, "{takes} leases for 500 requests");
        // Past the limit within the window: exactly the limit in all, whichever replica.
        for _ in 0..200 {
            total += admitted(&a, &key, 2).await + admitted(&b, &key, 1).await;
        }
        assert_eq!(total, 800);
        let refused = a.check(&key).await.unwrap().unwrap();
        assert_eq!((refused.allowed, refused.remaining), (false, 0));
    }

    #[tokio::test]
    async fn unused_budget_goes_back_once_its_second_is_over() {
        let counter = Arc::new(LeasingCounter::default());
        let clock = Arc::new(Tick(Mutex::new(Utc::now())));
        let service = RateLimitService::new(counter.clone(), clock.clone(), 600, false);
        let key = limited(80);
        // The lease grows with use: 1, then 3, then 7 hits; 6 requests leave some of them unused.
        assert_eq!(admitted(&service, &key, 6).await, 6);
        let second = clock.now().timestamp();
        let counted = || counter.seconds.lock().unwrap().get(&second).copied().unwrap_or(0);
        assert!(counted() > 6, "a lease holds more than was used: {}", counted());
        service.return_unused().await;
        assert!(counted() > 6, "not while its second lasts");
        clock.advance(1);
        service.return_unused().await;
        assert_eq!(counted(), 6, "exactly what was used stays counted");
        // A crashed replica's lease (never given back) only makes the others refuse early.
        let crashed = RateLimitService::new(counter.clone(), clock.clone(), 600, false);
        assert_eq!(admitted(&crashed, &key, 20).await, 20);
        drop(crashed);
        let other = RateLimitService::new(counter.clone(), clock.clone(), 600, false);
        let rest = admitted(&other, &key, 100).await;
        assert!(rest <= 80 - 6 - 20, "{rest} admitted after a stranded lease");
    }
}
