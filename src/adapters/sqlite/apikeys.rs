//! `ApiKeyRepo` on SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Row, SqlitePool, sqlite::SqliteRow};
use uuid::Uuid;

use super::{from_micros, micros, opt_from_micros, uuid_from_text};
use crate::{
    adapters::{
        db::{corrupt, db_error},
        rows,
    },
    domain::{ApiKey, DomainError, KeyHash, Page, PageRequest},
    ports::{ApiKeyRepo, StoredKey},
};

const COLUMNS: &str = "id, name, prefix, key_hash, scopes, allowed_ips, rate_limit_per_minute, expires_at, created_at, last_used_at, revoked_at";
/// `COLUMNS` of the `k` alias, for joins.
const PREFIXED: &str = "k.id, k.name, k.prefix, k.key_hash, k.scopes, k.allowed_ips, k.rate_limit_per_minute, k.expires_at, k.created_at, k.last_used_at, k.revoked_at";
const VALUES: &str = "?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11";

pub struct SqliteApiKeyRepo {
    pool: SqlitePool,
}

impl SqliteApiKeyRepo {
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

fn json_list(items: Vec<String>) -> String {
    serde_json::Value::from(items).to_string()
}

fn bind_key<'q>(query: SqliteQuery<'q>, key: &ApiKey, hash: &KeyHash) -> SqliteQuery<'q> {
    query
        .bind(key.id.to_string())
        .bind(key.name.clone())
        .bind(key.prefix.clone())
        .bind(hash.as_str().to_owned())
        .bind(json_list(rows::scopes_to_strings(&key.scopes)))
        .bind(json_list(rows::nets_to_strings(&key.allowed_ips)))
        .bind(key.rate_limit_per_minute.map(i64::from))
        .bind(key.expires_at.map(micros))
        .bind(micros(key.created_at))
        .bind(key.last_used_at.map(micros))
        .bind(key.revoked_at.map(micros))
}

fn strings_from_json(raw: &str, what: &str) -> Result<Vec<String>, DomainError> {
    serde_json::from_str(raw).map_err(|e| corrupt(what, e))
}

fn key_from_row(row: &SqliteRow) -> Result<(ApiKey, KeyHash), DomainError> {
    let key = ApiKey {
        id: uuid_from_text(row.try_get("id").map_err(db_error)?)?,
        name: row.try_get("name").map_err(db_error)?,
        prefix: row.try_get("prefix").map_err(db_error)?,
        scopes: rows::scopes_from_strings(strings_from_json(row.try_get("scopes").map_err(db_error)?, "scopes")?)?,
        allowed_ips: rows::nets_from_strings(strings_from_json(
            row.try_get("allowed_ips").map_err(db_error)?,
            "allowed_ips",
        )?)?,
        rate_limit_per_minute: rows::u32_from_i32(row.try_get("rate_limit_per_minute").map_err(db_error)?),
        expires_at: opt_from_micros(row.try_get("expires_at").map_err(db_error)?)?,
        created_at: from_micros(row.try_get("created_at").map_err(db_error)?)?,
        last_used_at: opt_from_micros(row.try_get("last_used_at").map_err(db_error)?)?,
        revoked_at: opt_from_micros(row.try_get("revoked_at").map_err(db_error)?)?,
    };
    Ok((key, KeyHash::from_stored(row.try_get("key_hash").map_err(db_error)?)))
}

#[async_trait]
impl ApiKeyRepo for SqliteApiKeyRepo {
    async fn insert(&self, key: &ApiKey, hash: &KeyHash) -> Result<(), DomainError> {
        let sql = format!("INSERT INTO api_keys ({COLUMNS}) VALUES ({VALUES})");
        bind_key(sqlx::query(sqlx::AssertSqlSafe(sql)), key, hash).execute(&self.pool).await.map_err(db_error)?;
        Ok(())
    }

    async fn insert_if_none(&self, key: &ApiKey, hash: &KeyHash) -> Result<bool, DomainError> {
        // One statement: SQLite runs it under the database's single write lock, so two servers
        // on one file cannot both see an empty table and insert.
        let sql = format!("INSERT INTO api_keys ({COLUMNS}) SELECT {VALUES} WHERE NOT EXISTS (SELECT 1 FROM api_keys)");
        let inserted =
            bind_key(sqlx::query(sqlx::AssertSqlSafe(sql)), key, hash).execute(&self.pool).await.map_err(db_error)?;
        Ok(inserted.rows_affected() == 1)
    }

    async fn insert_if_hash_absent(&self, key: &ApiKey, hash: &KeyHash) -> Result<bool, DomainError> {
        // A secret replaced by a rotation stays retired: its hash is kept with the previous
        // secrets (never purged), so re-applying the same bootstrap secret stores nothing.
        let sql = format!(
            "INSERT INTO api_keys ({COLUMNS}) SELECT {VALUES}
             WHERE NOT EXISTS (SELECT 1 FROM api_key_previous_secrets WHERE key_hash = ?4)
             ON CONFLICT (key_hash) DO NOTHING"
        );
        let inserted =
            bind_key(sqlx::query(sqlx::AssertSqlSafe(sql)), key, hash).execute(&self.pool).await.map_err(db_error)?;
        Ok(inserted.rows_affected() == 1)
    }

    #[tracing::instrument(name = "db api_keys.find_by_hash", skip_all, fields(db.system = "sqlite"))]
    async fn find_by_hash(&self, hash: &KeyHash) -> Result<Option<StoredKey>, DomainError> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE key_hash = ?1");
        let current = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(hash.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        if let Some(row) = current {
            let (key, hash) = key_from_row(&row)?;
            return Ok(Some(StoredKey { key, hash, secret_valid_until: None }));
        }
        // Only a miss pays for the second lookup: rotated-out secrets are rare.
        let sql = format!(
            "SELECT {PREFIXED}, p.key_hash AS previous_hash, p.valid_until
             FROM api_key_previous_secrets p JOIN api_keys k ON k.id = p.key_id WHERE p.key_hash = ?1"
        );
        let previous = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(hash.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        previous
            .map(|row| {
                let (key, _) = key_from_row(&row)?;
                let hash = KeyHash::from_stored(row.try_get("previous_hash").map_err(db_error)?);
                Ok(StoredKey {
                    key,
                    hash,
                    secret_valid_until: Some(from_micros(row.try_get("valid_until").map_err(db_error)?)?),
                })
            })
            .transpose()
    }

    async fn get(&self, id: Uuid) -> Result<Option<ApiKey>, DomainError> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE id = ?1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(row.as_ref().map(key_from_row).transpose()?.map(|(key, _)| key))
    }

    async fn list(&self, page: &PageRequest) -> Result<Page<ApiKey>, DomainError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM api_keys
             WHERE ?1 IS NULL OR (created_at, id) < (SELECT created_at, id FROM api_keys WHERE id = ?1)
             ORDER BY created_at DESC, id DESC LIMIT ?2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(page.after.map(|id| id.to_string()))
            .bind(page.fetch_limit())
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        let keys = rows.iter().map(|row| key_from_row(row).map(|(key, _)| key)).collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_rows(keys, page, |key| key.id))
    }

    async fn update(&self, key: &ApiKey) -> Result<bool, DomainError> {
        let done = sqlx::query(
            "UPDATE api_keys SET name = ?2, scopes = ?3, allowed_ips = ?4, rate_limit_per_minute = ?5, expires_at = ?6
             WHERE id = ?1",
        )
        .bind(key.id.to_string())
        .bind(&key.name)
        .bind(json_list(rows::scopes_to_strings(&key.scopes)))
        .bind(json_list(rows::nets_to_strings(&key.allowed_ips)))
        .bind(key.rate_limit_per_minute.map(i64::from))
        .bind(key.expires_at.map(micros))
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn rotate(
        &self,
        id: Uuid,
        new_hash: &KeyHash,
        new_prefix: &str,
        old_valid_until: DateTime<Utc>,
    ) -> Result<bool, DomainError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
        let moved = sqlx::query(
            "INSERT INTO api_key_previous_secrets (key_hash, key_id, valid_until)
             SELECT key_hash, id, ?2 FROM api_keys WHERE id = ?1",
        )
        .bind(id.to_string())
        .bind(micros(old_valid_until))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        if moved.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query("UPDATE api_keys SET key_hash = ?2, prefix = ?3 WHERE id = ?1")
            .bind(id.to_string())
            .bind(new_hash.as_str())
            .bind(new_prefix)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(true)
    }

    async fn revoke(&self, id: Uuid, at: DateTime<Utc>) -> Result<bool, DomainError> {
        let done = sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1")
            .bind(id.to_string())
            .bind(micros(at))
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn record_usage(&self, used: &[(Uuid, DateTime<Utc>)]) -> Result<(), DomainError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
        for (id, at) in used {
            sqlx::query("UPDATE api_keys SET last_used_at = MAX(COALESCE(last_used_at, ?2), ?2) WHERE id = ?1")
                .bind(id.to_string())
                .bind(micros(*at))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)
    }
}
