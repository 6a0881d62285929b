//! `RateLimiter`: one sliding window per key, on SQLite, Postgres and in memory.

use std::sync::Arc;

use chrono::DateTime;
use rdev_api::{adapters::memory::MemoryRateLimiter, ports::RateLimiter};

use super::{database, seconds};
use crate::support::Db;

async fn limiter(db: Option<Db>) -> Arc<dyn RateLimiter> {
    match db {
        Some(db) => database(db).await.rate_limiter(),
        None => Arc::new(MemoryRateLimiter::default()),
    }
}

on_every_adapter!(limiter: a_window_admits_its_limit_then_refuses_until_the_oldest_leaves, purge_forgets_seconds_before_a_time);

async fn a_window_admits_its_limit_then_refuses_until_the_oldest_leaves(limiter: Arc<dyn RateLimiter>) {
    let key = uuid::Uuid::new_v4();
    let start = DateTime::from_timestamp(1_000_000, 0).unwrap();
    for n in 0..3 {
        let decision = limiter.hit(key, 3, 60, start + seconds(n)).await.unwrap();
        assert!(decision.allowed);
        assert_eq!((decision.limit, decision.remaining), (3, 2 - n as u32));
    }
    let refused = limiter.hit(key, 3, 60, start + seconds(30)).await.unwrap();
    assert!(!refused.allowed);
    assert_eq!((refused.remaining, refused.reset_secs), (0, 30), "the first hit leaves the window 60 s after it");
    assert!(limiter.hit(uuid::Uuid::new_v4(), 3, 60, start + seconds(30)).await.unwrap().allowed, "keys apart");

    // The first second has left the window, and the refused hit took no slot: one is free.
    let later = start + seconds(60);
    let again = limiter.hit(key, 3, 60, later).await.unwrap();
    assert_eq!((again.allowed, again.remaining), (true, 0));
    assert!(!limiter.hit(key, 3, 60, later).await.unwrap().allowed);
}

async fn purge_forgets_seconds_before_a_time(limiter: Arc<dyn RateLimiter>) {
    let key = uuid::Uuid::new_v4();
    let start = DateTime::from_timestamp(2_000_000, 0).unwrap();
    for n in 0..3 {
        limiter.hit(key, 10, 60, start + seconds(n)).await.unwrap();
    }
    assert_eq!(limiter.purge(start + seconds(2)).await.unwrap(), 2, "seconds 0 and 1");
    assert_eq!(limiter.purge(start + seconds(2)).await.unwrap(), 0);
    let decision = limiter.hit(key, 10, 60, start + seconds(3)).await.unwrap();
    assert_eq!(decision.remaining, 8, "the second kept still counts");
}

/// Postgres leases budget: `take` records up to the hits asked for, as many as the window has
/// room for, and `give_back` returns unused ones of a second, which `hit` then sees as free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_leases_take_what_is_left_and_take_back_what_was_not_used() {
    let limiter = limiter(Some(Db::Postgres)).await;
    assert!(limiter.leases());
    let key = uuid::Uuid::new_v4();
    let now = DateTime::from_timestamp(3_000_000, 0).unwrap();
    let first = limiter.take(key, 5, 8, 60, now).await.unwrap();
    assert_eq!((first.granted, first.used, first.oldest_second), (5, 5, now.timestamp()));
    let second = limiter.take(key, 5, 8, 60, now + seconds(1)).await.unwrap();
    assert_eq!((second.granted, second.used), (3, 8), "only what the window has room for");
    assert_eq!(limiter.take(key, 5, 8, 60, now + seconds(2)).await.unwrap().granted, 0);
    limiter.give_back(key, 2, now.timestamp()).await.unwrap();
    let after = limiter.hit(key, 8, 60, now + seconds(2)).await.unwrap();
    assert_eq!((after.allowed, after.remaining), (true, 1), "the two given back are free again");
    // The sliding window applies to leased hits: 60 s on, the first second (3 kept) has left,
    // and 4 of the 8 remain in the window (3 of second 1, the hit of second 2).
    assert_eq!(limiter.take(key, 9, 8, 60, now + seconds(60)).await.unwrap().granted, 4);
}
