//! `RateLimiter` in process memory: the same one-second buckets as the database limiters, without
//! a write transaction per request. Held to the same contract as they are
//! (`tests/api/contracts/ratelimit.rs`).
//!
//! Only right where one process serves every request of a key: the embedded SQLite setup (a
//! SQLite file has one host). `RDEV_RATE_LIMIT_STORE=auto` picks it there and the database on
//! Postgres, where replicas must share the count.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{
    domain::DomainError,
    ports::{RateDecision, RateLimiter},
};

/// Each key's non-empty seconds, oldest first: `(second, hits)`.
#[derive(Default)]
pub struct MemoryRateLimiter {
    windows: Mutex<HashMap<Uuid, VecDeque<(i64, u32)>>>,
}

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn hit(
        &self,
        key_id: Uuid,
        limit: u32,
        window_secs: u32,
        now: DateTime<Utc>,
    ) -> Result<RateDecision, DomainError> {
        let second = now.timestamp();
        let mut windows = self.windows.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let buckets = windows.entry(key_id).or_default();
        while buckets.front().is_some_and(|(s, _)| *s <= second - i64::from(window_secs)) {
            buckets.pop_front();
        }
        let used: u32 = buckets.iter().map(|(_, hits)| *hits).fold(0, u32::saturating_add);
        let oldest = buckets.front().map_or(second, |(s, _)| *s);
        let allowed = used < limit;
        if allowed {
            match buckets.back_mut() {
                Some((s, hits)) if *s == second => *hits += 1,
                _ => buckets.push_back((second, 1)),
            }
        }
        Ok(RateDecision::from_window(allowed, limit, used + u32::from(allowed), oldest, window_secs, now))
    }

    async fn purge(&self, before: DateTime<Utc>) -> Result<u64, DomainError> {
        let before = before.timestamp();
        let mut windows = self.windows.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut purged = 0;
        windows.retain(|_, buckets| {
            while buckets.front().is_some_and(|(s, _)| *s < before) {
                buckets.pop_front();
                purged += 1;
            }
            !buckets.is_empty()
        });
        Ok(purged)
    }
}
