//! `CachedApiKeyRepo`: API key lookups by secret hash, cached for `CACHE_TTL`.
//!
//! Every authenticated request looks its key up; the cache keeps that off the database. Changes
//! made through this replica (revoke, update, rotate) evict the key here at once; other replicas
//! see them when their entry expires, so a revoked key stops working everywhere within
//! `CACHE_TTL`. Misses are not cached, so random guesses cannot crowd out real keys.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use moka::future::Cache;
use uuid::Uuid;

use crate::{
    domain::{ApiKey, DomainError, KeyHash, Page, PageRequest},
    ports::{ApiKeyRepo, StoredKey},
    telemetry::metrics::{CACHE_REQUESTS_TOTAL, FixedCounter},
};

const MAX_ENTRIES: u64 = 10_000;
static HITS: FixedCounter =
    FixedCounter::new(|| metrics::counter!(CACHE_REQUESTS_TOTAL, "cache" => "api_keys", "result" => "hit"));
static MISSES: FixedCounter =
    FixedCounter::new(|| metrics::counter!(CACHE_REQUESTS_TOTAL, "cache" => "api_keys", "result" => "miss"));

pub struct CachedApiKeyRepo {
    inner: Arc<dyn ApiKeyRepo>,
    by_hash: Cache<String, StoredKey>,
}

impl CachedApiKeyRepo {
    pub fn new(inner: Arc<dyn ApiKeyRepo>, ttl: Duration) -> Self {
        let by_hash =
            Cache::builder().max_capacity(MAX_ENTRIES).time_to_live(ttl).support_invalidation_closures().build();
        Self { inner, by_hash }
    }

    fn evict(&self, id: Uuid) {
        // Only fails if closures were not enabled at build time, which `new` does.
        let _ = self.by_hash.invalidate_entries_if(move |_, stored| stored.key.id == id);
    }
}

#[async_trait]
impl ApiKeyRepo for CachedApiKeyRepo {
    async fn insert(&self, key: &ApiKey, hash: &KeyHash) -> Result<(), DomainError> {
        self.inner.insert(key, hash).await
    }

    async fn insert_if_none(&self, key: &ApiKey, hash: &KeyHash) -> Result<bool, DomainError> {
        self.inner.insert_if_none(key, hash).await
    }

    async fn insert_if_hash_absent(&self, key: &ApiKey, hash: &KeyHash) -> Result<bool, DomainError> {
        self.inner.insert_if_hash_absent(key, hash).await
    }

    async fn find_by_hash(&self, hash: &KeyHash) -> Result<Option<StoredKey>, DomainError> {
        if let Some(hit) = self.by_hash.get(hash.as_str()).await {
            HITS.increment(1);
            return Ok(Some(hit));
        }
        MISSES.increment(1);
        let found = self.inner.find_by_hash(hash).await?;
        if let Some(stored) = &found {
            self.by_hash.insert(hash.as_str().to_owned(), stored.clone()).await;
        }
        Ok(found)
    }

    async fn get(&self, id: Uuid) -> Result<Option<ApiKey>, DomainError> {
        self.inner.get(id).await
    }

    async fn list(&self, page: &PageRequest) -> Result<Page<ApiKey>, DomainError> {
        self.inner.list(page).await
    }

    async fn update(&self, key: &ApiKey) -> Result<bool, DomainError> {
        let updated = self.inner.update(key).await?;
        self.evict(key.id);
        Ok(updated)
    }

    async fn rotate(
        &self,
        id: Uuid,
        new_hash: &KeyHash,
        new_prefix: &str,
        old_valid_until: DateTime<Utc>,
    ) -> Result<bool, DomainError> {
        let rotated = self.inner.rotate(id, new_hash, new_prefix, old_valid_until).await?;
        self.evict(id);
        Ok(rotated)
    }

    async fn revoke(&self, id: Uuid, at: DateTime<Utc>) -> Result<bool, DomainError> {
        let revoked = self.inner.revoke(id, at).await?;
        self.evict(id);
        Ok(revoked)
    }

    async fn record_usage(&self, used: &[(Uuid, DateTime<Utc>)]) -> Result<(), DomainError> {
        self.inner.record_usage(used).await
    }
}
