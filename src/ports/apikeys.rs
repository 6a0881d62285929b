//! Storage of API keys.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{ApiKey, DomainError, KeyHash, Page, PageRequest};

#[async_trait]
pub trait ApiKeyRepo: Send + Sync {
    /// Stores a new key under the hash of its secret. `Conflict` if that hash is already stored.
    async fn insert(&self, key: &ApiKey, hash: &KeyHash) -> Result<(), DomainError>;

    /// Stores the key only if no key exists at all, atomically across replicas that start
    /// together. Returns whether it was stored.
    async fn insert_if_none(&self, key: &ApiKey, hash: &KeyHash) -> Result<bool, DomainError>;

    /// Stores the key unless its hash is already stored (revoked or not). Returns whether it was
    /// stored. Idempotent, so a bootstrap secret can be applied at every start.
    async fn insert_if_hash_absent(&self, key: &ApiKey, hash: &KeyHash) -> Result<bool, DomainError>;

    /// The key with this secret hash, with the stored hash for a constant-time check.
    async fn find_by_hash(&self, hash: &KeyHash) -> Result<Option<(ApiKey, KeyHash)>, DomainError>;

    async fn get(&self, id: Uuid) -> Result<Option<ApiKey>, DomainError>;

    /// Newest first.
    async fn list(&self, page: &PageRequest) -> Result<Page<ApiKey>, DomainError>;

    /// Marks the key revoked at `at` unless it already is. `Ok(false)` if no such key exists.
    async fn revoke(&self, id: Uuid, at: DateTime<Utc>) -> Result<bool, DomainError>;
}
