//! `RateLimiter` on SQLite: the same per-second buckets as Postgres, checked and counted inside
//! one `BEGIN IMMEDIATE` transaction, which holds SQLite's single write lock throughout.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Row, SqlitePool};
use uuid::Uuid;

use crate::{
    adapters::sql::errors::db_error,
    domain::DomainError,
    ports::{RateDecision, RateLimiter},
};

pub struct SqliteRateLimiter {
    pool: SqlitePool,
}

impl SqliteRateLimiter {
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
        let row = sqlx::query(
            "SELECT COALESCE(SUM(hits), 0) AS used, MIN(second) AS oldest FROM rate_limit_buckets
             WHERE key_id = ?1 AND second > ?2",
        )
        .bind(&key)
        .bind(second - i64::from(window_secs))
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
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
            .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)?;
        let used = u32::try_from(used).unwrap_or(u32::MAX).saturating_add(u32::from(allowed));
        Ok(RateDecision::from_window(allowed, limit, used, oldest.unwrap_or(second), window_secs, now))
    }

    async fn purge(&self, before: DateTime<Utc>) -> Result<u64, DomainError> {
        let done = sqlx::query("DELETE FROM rate_limit_buckets WHERE second < ?1")
            .bind(before.timestamp())
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(done.rows_affected())
    }
}
