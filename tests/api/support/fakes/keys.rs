//! `ApiKeyRepo` in memory: keys by id, enough for the services that read keys back (the watch
//! of running work). Secrets are not kept: lookups by hash find nothing.

use std::{collections::HashMap, sync::Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rdev_api::{
    domain::{ApiKey, DomainError, KeyHash, Page, PageRequest},
    ports::{ApiKeyRepo, StoredKey},
};
use uuid::Uuid;

#[derive(Default)]
pub struct MemoryKeys(Mutex<HashMap<Uuid, ApiKey>>);

impl MemoryKeys {
    /// Stores `key`, or replaces it (a revocation, an expiry moved).
    pub fn put(&self, key: ApiKey) {
        self.0.lock().unwrap().insert(key.id, key);
    }
}

#[async_trait]
impl ApiKeyRepo for MemoryKeys {
    async fn insert(&self, key: &ApiKey, _hash: &KeyHash) -> Result<(), DomainError> {
        self.put(key.clone());
        Ok(())
    }

    async fn insert_if_none(&self, key: &ApiKey, hash: &KeyHash) -> Result<bool, DomainError> {
        self.insert(key, hash).await.map(|()| true)
    }

    async fn insert_if_hash_absent(&self, key: &ApiKey, hash: &KeyHash) -> Result<bool, DomainError> {
        self.insert(key, hash).await.map(|()| true)
    }

    async fn find_by_hash(&self, _hash: &KeyHash) -> Result<Option<StoredKey>, DomainError> {
        Ok(None)
    }

    async fn get(&self, id: Uuid) -> Result<Option<ApiKey>, DomainError> {
        Ok(self.0.lock().unwrap().get(&id).cloned())
    }

    async fn list(&self, page: &PageRequest) -> Result<Page<ApiKey>, DomainError> {
        let rows: Vec<ApiKey> = self.0.lock().unwrap().values().cloned().collect();
        Ok(Page::from_rows(rows, page, |key| key.id))
    }

    async fn update(&self, key: &ApiKey) -> Result<bool, DomainError> {
        self.put(key.clone());
        Ok(true)
    }

    async fn rotate(&self, _: Uuid, _: &KeyHash, _: &str, _: DateTime<Utc>) -> Result<bool, DomainError> {
        Ok(false)
    }

    async fn revoke(&self, id: Uuid, at: DateTime<Utc>) -> Result<bool, DomainError> {
        Ok(self.0.lock().unwrap().get_mut(&id).map(|key| key.revoked_at = Some(at)).is_some())
    }

    async fn record_usage(&self, _used: &[(Uuid, DateTime<Utc>)]) -> Result<(), DomainError> {
        Ok(())
    }
}
