//! `RateLimiter` on SQLite: the same per-second buckets as Postgres, checked and counted inside
//! one `BEGIN IMMEDIATE` transaction, which holds SQLite's single write lock throughout.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Row, Sqlite};
use uuid::Uuid;

use crate::{
    adapters::sql::{dialect::Db, errors::db_error},
    domain::DomainError,
    ports::{RateDecision, RateLimiter},
};

pub struct SqliteRateLimiter {
    db: Db<Sqlite>,
}

impl SqliteRateLimiter {
    pub(crate) fn new(db: Db<Sqlite>) -> Self {
        Self { db }
    }
}

#[async_trait]
impl RateLimiter for SqliteRateLimiter {
    #[tracing::instrument(name = "db rate_limit.hit", skip_all, fields(db.system = "sqlite"))]
    async fn hit(
        &self,
        key_id: Uuid,
        limit: u32,
        window_secs: u32,
        now: DateTime<Utc>,
    ) -> Result<RateDecision, DomainError> {
        let key = key_id.to_string();
        let second = now.timestamp();
        let health = &self.db.health;
        let mut tx = health.acquiring(self.db.pool.begin_with("BEGIN IMMEDIATE")).await?;
        let row = sqlx::query(
            "SELECT COALESCE(SUM(hits), 0) AS used, MIN(second) AS oldest FROM rate_limit_buckets
             WHERE key_id = ?1 AND second > ?2",
        )
        .bind(&key)
        .bind(second - i64::from(window_secs))
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| health.failed(e))?;
        let used: i64 = row.try_get("used").map_err(db_error)?;
        let oldest: Option<i64> = row.try_get("oldest").map_err(db_error)?;
        let allowed = used < i64::from(limit);
        if allowed {
            sqlx::query(
                "INSERT INTO rate_limit_buckets (key_id, second, hits) VALUES (?1, ?2, 1)
                 ON CONFLICT (key_id, second) DO UPDATE SET hits = hits + 1",
            )
            .bind(&key)
            .bind(second)
            .execute(&mut *tx)
            .await
            .map_err(|e| health.failed(e))?;
        }
        tx.commit().await.map_err(|e| health.failed(e))?;
        let used = u32::try_from(used).unwrap_or(u32::MAX).saturating_add(u32::from(allowed));
        Ok(RateDecision::from_window(allowed, limit, used, oldest.unwrap_or(second), window_secs, now))
    }

    async fn purge(&self, before: DateTime<Utc>) -> Result<u64, DomainError> {
        let query = sqlx::query("DELETE FROM rate_limit_buckets WHERE second < ?1").bind(before.timestamp());
        let done = self.db.health.acquiring(query.execute(&self.db.pool)).await?;
        Ok(done.rows_affected())
    }
}
