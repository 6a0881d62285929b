//! `RateLimiter` on Postgres: the hits of concurrent requests go together in one call of
//! `rdev_rate_limit_hits` (migration 0005), which decides each with `rdev_rate_limit_hit`
//! (migration 0002): an advisory lock per key serialises a key's hits across replicas.
//! Leases (`take`, migration 0014) record several hits at once under the same lock, for the
//! rate-limit service to admit from memory; `give_back` returns the unused ones.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Postgres, Row};
use uuid::Uuid;

use crate::{
    adapters::sql::{
        dialect::Db,
        errors::db_error,
        group_commit::{BatchWriter, GroupCommit},
    },
    domain::DomainError,
    ports::{Grant, RateDecision, RateLimiter},
};

pub struct PgRateLimiter {
    db: Db<Postgres>,
    hits: GroupCommit<HitBatches>,
}

impl PgRateLimiter {
    pub(crate) fn new(db: Db<Postgres>) -> Self {
        Self { hits: GroupCommit::new(HitBatches { db: db.clone() }), db }
    }
}

/// One request's hit.
pub(crate) struct Hit {
    key_id: Uuid,
    limit: u32,
    window_secs: u32,
    second: i64,
}

/// `(allowed, used, oldest second)`, as `rdev_rate_limit_hit` returns it.
type Counted = (bool, i32, i64);

/// Sends the hits waiting at one moment in one call of `rdev_rate_limit_hits` (migration 0005),
/// which decides each exactly as a call of its own would, under the same per-key locks.
pub(crate) struct HitBatches {
    db: Db<Postgres>,
}

#[async_trait]
impl BatchWriter for HitBatches {
    type Item = Hit;
    type Output = Counted;

    async fn write(&self, batch: &[Hit]) -> Result<Vec<Counted>, DomainError> {
        // One call per (second, window) pair; in practice all hits of a batch share both.
        let mut groups: BTreeMap<(i64, u32), Vec<usize>> = BTreeMap::new();
        for (index, hit) in batch.iter().enumerate() {
            groups.entry((hit.second, hit.window_secs)).or_default().push(index);
        }
        let mut counted = vec![None; batch.len()];
        for ((second, window), members) in groups {
            let keys: Vec<Uuid> = members.iter().map(|&i| batch[i].key_id).collect();
            let limits: Vec<i32> = members.iter().map(|&i| i32::try_from(batch[i].limit).unwrap_or(i32::MAX)).collect();
            let query = sqlx::query("SELECT ord, allowed, used, oldest FROM rdev_rate_limit_hits($1, $2, $3, $4)")
                .bind(keys)
                .bind(second)
                .bind(i32::try_from(window).unwrap_or(i32::MAX))
                .bind(limits);
            let rows = self.db.health.acquiring(query.fetch_all(&self.db.pool)).await?;
            for row in &rows {
                let ord: i32 = row.try_get("ord").map_err(db_error)?;
                let value = (
                    row.try_get("allowed").map_err(db_error)?,
                    row.try_get("used").map_err(db_error)?,
                    row.try_get("oldest").map_err(db_error)?,
                );
                // `ord` is the 1-based position of the hit in this call's arrays.
                if let Some(&index) = usize::try_from(ord - 1).ok().and_then(|p| members.get(p)) {
                    counted[index] = Some(value);
                }
            }
        }
        counted
            .into_iter()
            .map(|c| c.ok_or_else(|| DomainError::internal(anyhow::anyhow!("a rate-limit hit went unanswered"))))
            .collect()
    }
}

#[async_trait]
impl RateLimiter for PgRateLimiter {
    fn leases(&self) -> bool {
        true
    }

    #[tracing::instrument(name = "db rate_limit.take", skip_all, fields(db.system = "postgresql"))]
    async fn take(
        &self,
        key_id: Uuid,
        want: u32,
        limit: u32,
        window_secs: u32,
        now: DateTime<Utc>,
    ) -> Result<Grant, DomainError> {
        let as_i32 = |value: u32| i32::try_from(value).unwrap_or(i32::MAX);
        let query = sqlx::query("SELECT granted, used, oldest FROM rdev_rate_limit_take($1, $2, $3, $4, $5)")
            .bind(key_id)
            .bind(now.timestamp())
            .bind(as_i32(window_secs))
            .bind(as_i32(limit))
            .bind(as_i32(want));
        let row = self.db.health.acquiring(query.fetch_one(&self.db.pool)).await?;
        let count = |column: &str| -> Result<u32, DomainError> {
            let value: i32 = row.try_get(column).map_err(db_error)?;
            Ok(u32::try_from(value).unwrap_or(0))
        };
        Ok(Grant {
            granted: count("granted")?,
            used: count("used")?,
            oldest_second: row.try_get("oldest").map_err(db_error)?,
        })
    }

    async fn give_back(&self, key_id: Uuid, count: u32, second: i64) -> Result<(), DomainError> {
        let query = sqlx::query(
            "UPDATE rate_limit_buckets SET hits = GREATEST(hits - $3, 0) WHERE key_id = $1 AND second = $2",
        )
        .bind(key_id)
        .bind(second)
        .bind(i32::try_from(count).unwrap_or(i32::MAX));
        self.db.health.acquiring(query.execute(&self.db.pool)).await.map(drop)
    }

    #[tracing::instrument(name = "db rate_limit.hit", skip_all, fields(db.system = "postgresql"))]
    async fn hit(
        &self,
        key_id: Uuid,
        limit: u32,
        window_secs: u32,
        now: DateTime<Utc>,
    ) -> Result<RateDecision, DomainError> {
        let hit = Hit { key_id, limit, window_secs, second: now.timestamp() };
        let (allowed, used, oldest) = self.hits.submit(hit).await?;
        Ok(RateDecision::from_window(allowed, limit, used.max(0) as u32, oldest, window_secs, now))
    }

    async fn purge(&self, before: DateTime<Utc>) -> Result<u64, DomainError> {
        let query = sqlx::query("DELETE FROM rate_limit_buckets WHERE second < $1").bind(before.timestamp());
        let done = self.db.health.acquiring(query.execute(&self.db.pool)).await?;
        Ok(done.rows_affected())
    }
}
