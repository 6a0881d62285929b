//! Storage of API keys and their secrets' hashes.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{ApiKey, DomainError, KeyHash, Page, PageRequest};

/// A key found by the hash of a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub key: ApiKey,
    /// The stored hash that matched, for a constant-time comparison.
    pub hash: KeyHash,
    /// `Some` when the hash is an old secret replaced by a rotation: usable until then.
    pub secret_valid_until: Option<DateTime<Utc>>,
}

#[async_trait]
pub trait ApiKeyRepo: Send + Sync {
    /// Stores a new key under the hash of its secret. `Conflict` if that hash is already stored.
    async fn insert(&self, key: &ApiKey, hash: &KeyHash) -> Result<(), DomainError>;

    /// Stores the key only if no key exists at all, atomically across replicas that start
    /// together. Returns whether it was stored.
    async fn insert_if_none(&self, key: &ApiKey, hash: &KeyHash) -> Result<bool, DomainError>;

    /// Stores the key unless its hash is already stored: as a key's secret (revoked or not) or
    /// as a secret a rotation replaced. Returns whether it was stored. Idempotent, so a bootstrap
    /// secret can be applied at every start, and stays dead once revoked or rotated out.
    async fn insert_if_hash_absent(&self, key: &ApiKey, hash: &KeyHash) -> Result<bool, DomainError>;

    /// The key whose current or previous (rotated) secret has this hash.
    async fn find_by_hash(&self, hash: &KeyHash) -> Result<Option<StoredKey>, DomainError>;

    async fn get(&self, id: Uuid) -> Result<Option<ApiKey>, DomainError>;

    /// Newest first.
    async fn list(&self, page: &PageRequest) -> Result<Page<ApiKey>, DomainError>;

    /// Saves name, scopes, allowed_ips, rate_limit_per_minute and expires_at. `Ok(false)` if no
    /// such key exists.
    async fn update(&self, key: &ApiKey) -> Result<bool, DomainError>;

    /// Makes `new_hash` the key's secret; the current one keeps working until `old_valid_until`.
    /// `Ok(false)` if no such key exists.
    async fn rotate(
        &self,
        id: Uuid,
        new_hash: &KeyHash,
        new_prefix: &str,
        old_valid_until: DateTime<Utc>,
    ) -> Result<bool, DomainError>;

    /// Marks the key revoked at `at` unless it already is. `Ok(false)` if no such key exists.
    async fn revoke(&self, id: Uuid, at: DateTime<Utc>) -> Result<bool, DomainError>;

    /// Records when keys were last used, in one batch; never moves a time backwards.
    async fn record_usage(&self, used: &[(Uuid, DateTime<Utc>)]) -> Result<(), DomainError>;
}
