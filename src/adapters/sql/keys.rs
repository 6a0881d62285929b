//! `ApiKeyRepo` on SQL: the `api_keys` rows and the secrets rotations replaced.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ipnet::IpNet;
use uuid::Uuid;

use super::{
    dialect::{Db, Dialect, Kind, Stmt, begin, commit},
    errors::corrupt,
    values::Row,
};
use crate::{
    domain::{ApiKey, DomainError, KeyHash, Page, PageRequest, Scope},
    ports::{ApiKeyRepo, StoredKey},
};

const COLUMNS: &str = "id, name, prefix, key_hash, scopes, allowed_ips, rate_limit_per_minute, \
     expires_at, created_at, last_used_at, revoked_at, quotas";
const VALUES: &str = "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12";
/// Serialises "create the first key" across Postgres replicas that start at the same moment
/// (on SQLite the write lock does).
const BOOTSTRAP_LOCK: i64 = 0x7264_6576_6b65_7931;

pub(crate) struct SqlApiKeys<D: Dialect> {
    db: Db<D>,
}

impl<D: Dialect> SqlApiKeys<D> {
    pub(crate) fn new(db: Db<D>) -> Self {
        Self { db }
    }

    /// An insert of the whole key, in `COLUMNS` order.
    fn insert_stmt(sql: String, key: &ApiKey, hash: &KeyHash) -> Stmt<D> {
        Stmt::new(sql)
            .uuid(Some(key.id))
            .value(key.name.clone())
            .value(key.prefix.clone())
            .value(hash.as_str().to_owned())
            .strings(key.scopes.iter().map(|s| s.as_str().to_owned()).collect())
            .strings(key.allowed_ips.iter().map(ToString::to_string).collect())
            .value(limit(key))
            .time(key.expires_at)
            .time(Some(key.created_at))
            .time(key.last_used_at)
            .time(key.revoked_at)
            .json(&key.quotas)
    }
}

fn limit(key: &ApiKey) -> Option<i32> {
    key.rate_limit_per_minute.map(|v| i32::try_from(v).unwrap_or(i32::MAX))
}

fn key_from_row(row: &impl Row) -> Result<(ApiKey, KeyHash), DomainError> {
    let scopes = row.strings("scopes")?;
    let nets = row.strings("allowed_ips")?;
    let key = ApiKey {
        id: row.required_uuid("id")?,
        name: row.get("name")?,
        prefix: row.get("prefix")?,
        scopes: scopes.iter().map(|s| Scope::parse(s).map_err(|e| corrupt("scope", e))).collect::<Result<_, _>>()?,
        allowed_ips: nets
            .iter()
            .map(|n| n.parse::<IpNet>().map_err(|e| corrupt("allowed_ips", e)))
            .collect::<Result<_, _>>()?,
        rate_limit_per_minute: row.int("rate_limit_per_minute")?.and_then(|v| u32::try_from(v).ok()),
        expires_at: row.time("expires_at")?,
        created_at: row.required_time("created_at")?,
        last_used_at: row.time("last_used_at")?,
        revoked_at: row.time("revoked_at")?,
        quotas: row.json("quotas")?,
    };
    Ok((key, KeyHash::from_stored(row.get("key_hash")?)))
}

fn key_only(row: &impl Row) -> Result<ApiKey, DomainError> {
    key_from_row(row).map(|(key, _)| key)
}

#[async_trait]
impl<D: Dialect> ApiKeyRepo for SqlApiKeys<D> {
    async fn insert(&self, key: &ApiKey, hash: &KeyHash) -> Result<(), DomainError> {
        let sql = format!("INSERT INTO api_keys ({COLUMNS}) VALUES ({VALUES})");
        Self::insert_stmt(sql, key, hash).execute(&self.db).await?;
        Ok(())
    }

    async fn insert_if_none(&self, key: &ApiKey, hash: &KeyHash) -> Result<bool, DomainError> {
        // One statement in a write transaction: on SQLite the write lock, on Postgres an advisory
        // lock, keeps two servers starting together from both seeing an empty table.
        let mut tx = begin(&self.db).await?;
        if D::KIND == Kind::Postgres {
            Stmt::<D>::new("SELECT pg_advisory_xact_lock($1)").value(BOOTSTRAP_LOCK).execute(&mut tx).await?;
        }
        let sql = format!("INSERT INTO api_keys ({COLUMNS}) SELECT {VALUES} WHERE NOT EXISTS (SELECT 1 FROM api_keys)");
        let inserted = Self::insert_stmt(sql, key, hash).execute(&mut tx).await?;
        commit(tx).await?;
        Ok(inserted == 1)
    }

    async fn insert_if_hash_absent(&self, key: &ApiKey, hash: &KeyHash) -> Result<bool, DomainError> {
        // A secret replaced by a rotation stays retired: its hash is kept with the previous
        // secrets (never purged), so re-applying the same bootstrap secret stores nothing.
        let sql = format!(
            "INSERT INTO api_keys ({COLUMNS}) SELECT {VALUES}
             WHERE NOT EXISTS (SELECT 1 FROM api_key_previous_secrets WHERE key_hash = $4)
             ON CONFLICT (key_hash) DO NOTHING"
        );
        Ok(Self::insert_stmt(sql, key, hash).execute(&self.db).await? == 1)
    }

    #[tracing::instrument(name = "db api_keys.find_by_hash", skip_all, fields(db.system = D::SYSTEM))]
    async fn find_by_hash(&self, hash: &KeyHash) -> Result<Option<StoredKey>, DomainError> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE key_hash = $1");
        if let Some(row) = Stmt::<D>::new(sql).value(hash.as_str().to_owned()).fetch_optional(&self.db).await? {
            let (key, hash) = key_from_row(&row)?;
            return Ok(Some(StoredKey { key, hash, secret_valid_until: None }));
        }
        // Only a miss pays for the second lookup: rotated-out secrets are rare.
        let sql = format!(
            "SELECT {COLUMNS}, previous_hash, valid_until FROM api_keys
             JOIN (SELECT key_id, key_hash AS previous_hash, valid_until FROM api_key_previous_secrets
                   WHERE key_hash = $1) p ON p.key_id = api_keys.id"
        );
        let previous = Stmt::<D>::new(sql).value(hash.as_str().to_owned()).fetch_optional(&self.db).await?;
        previous
            .map(|row| {
                let (key, _) = key_from_row(&row)?;
                let hash = KeyHash::from_stored(row.get("previous_hash")?);
                Ok(StoredKey { key, hash, secret_valid_until: Some(row.required_time("valid_until")?) })
            })
            .transpose()
    }

    async fn get(&self, id: Uuid) -> Result<Option<ApiKey>, DomainError> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1");
        Stmt::<D>::new(sql).uuid(Some(id)).fetch_optional(&self.db).await?.as_ref().map(key_only).transpose()
    }

    async fn list(&self, page: &PageRequest) -> Result<Page<ApiKey>, DomainError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM api_keys
             WHERE $1 IS NULL OR (created_at, id) < (SELECT created_at, id FROM api_keys WHERE id = $1)
             ORDER BY created_at DESC, id DESC LIMIT $2"
        );
        let keys = Stmt::<D>::new(sql).page(page).fetch_mapped(&self.db, key_only).await?;
        Ok(Page::from_rows(keys, page, |key| key.id))
    }

    async fn update(&self, key: &ApiKey) -> Result<bool, DomainError> {
        let sql = "UPDATE api_keys SET name = $2, scopes = $3, allowed_ips = $4, rate_limit_per_minute = $5, \
                   expires_at = $6, quotas = $7 WHERE id = $1";
        let done = Stmt::<D>::new(sql)
            .uuid(Some(key.id))
            .value(key.name.clone())
            .strings(key.scopes.iter().map(|s| s.as_str().to_owned()).collect())
            .strings(key.allowed_ips.iter().map(ToString::to_string).collect())
            .value(limit(key))
            .time(key.expires_at)
            .json(&key.quotas)
            .execute(&self.db)
            .await?;
        Ok(done == 1)
    }

    async fn rotate(
        &self,
        id: Uuid,
        new_hash: &KeyHash,
        new_prefix: &str,
        old_valid_until: DateTime<Utc>,
    ) -> Result<bool, DomainError> {
        // The key row is locked (Postgres) or the database is (SQLite) until both writes commit.
        let lock = if D::KIND == Kind::Postgres { " FOR UPDATE" } else { "" };
        let mut tx = begin(&self.db).await?;
        let moved = Stmt::<D>::new(format!(
            "INSERT INTO api_key_previous_secrets (key_hash, key_id, valid_until)
             SELECT key_hash, id, $2 FROM api_keys WHERE id = $1{lock}"
        ))
        .uuid(Some(id))
        .time(Some(old_valid_until))
        .execute(&mut tx)
        .await?;
        if moved == 0 {
            return Ok(false);
        }
        Stmt::<D>::new("UPDATE api_keys SET key_hash = $2, prefix = $3 WHERE id = $1")
            .uuid(Some(id))
            .value(new_hash.as_str().to_owned())
            .value(new_prefix.to_owned())
            .execute(&mut tx)
            .await?;
        commit(tx).await?;
        Ok(true)
    }

    async fn revoke(&self, id: Uuid, at: DateTime<Utc>) -> Result<bool, DomainError> {
        let sql = "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1";
        Ok(Stmt::<D>::new(sql).uuid(Some(id)).time(Some(at)).execute(&self.db).await? == 1)
    }

    async fn record_usage(&self, used: &[(Uuid, DateTime<Utc>)]) -> Result<(), DomainError> {
        match D::KIND {
            // One statement for the whole batch.
            Kind::Postgres => {
                let (ids, times): (Vec<Uuid>, Vec<DateTime<Utc>>) = used.iter().copied().unzip();
                let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
                let times: Vec<String> = times.iter().map(DateTime::to_rfc3339).collect();
                Stmt::<D>::new(
                    "UPDATE api_keys k SET last_used_at = GREATEST(k.last_used_at, u.at::timestamptz)
                     FROM UNNEST($1::uuid[], $2::text[]) AS u(id, at) WHERE k.id = u.id",
                )
                .strings(ids)
                .strings(times)
                .execute(&self.db)
                .await?;
            }
            // One transaction: SQLite writes are local and cheap, the lock is what matters.
            Kind::Sqlite => {
                let mut tx = begin(&self.db).await?;
                for (id, at) in used {
                    Stmt::<D>::new(
                        "UPDATE api_keys SET last_used_at = MAX(COALESCE(last_used_at, $2), $2) WHERE id = $1",
                    )
                    .uuid(Some(*id))
                    .time(Some(*at))
                    .execute(&mut tx)
                    .await?;
                }
                commit(tx).await?;
            }
        }
        Ok(())
    }
}
