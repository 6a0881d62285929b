//! `RateLimiter` on Postgres: one call of `rdev_rate_limit_hit` (migration 0002) per request,
//! which serialises each key's hits across replicas with an advisory lock.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::{
    adapters::db::db_error,
    domain::DomainError,
    ports::{RateDecision, RateLimiter},
};

pub struct PgRateLimiter {
    pool: PgPool,
}

impl PgRateLimiter {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl RateLimiter for PgRateLimiter {
    #[tracing::instrument(name = "db rate_limit.hit", skip_all, fields(db.system = "postgresql"))]
    async fn hit(
        &self,
        key_id: Uuid,
        limit: u32,
        window_secs: u32,
        now: DateTime<Utc>,
    ) -> Result<RateDecision, DomainError> {
        let row = sqlx::query("SELECT allowed, used, oldest FROM rdev_rate_limit_hit($1, $2, $3, $4)")
            .bind(key_id)
            .bind(now.timestamp())
            .bind(i32::try_from(window_secs).unwrap_or(i32::MAX))
            .bind(i32::try_from(limit).unwrap_or(i32::MAX))
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?;
        let allowed: bool = row.try_get("allowed").map_err(db_error)?;
        let used: i32 = row.try_get("used").map_err(db_error)?;
        let oldest: i64 = row.try_get("oldest").map_err(db_error)?;
        Ok(RateDecision::from_window(allowed, limit, used.max(0) as u32, oldest, window_secs, now))
    }

    async fn purge(&self, before: DateTime<Utc>) -> Result<u64, DomainError> {
        let done = sqlx::query("DELETE FROM rate_limit_buckets WHERE second < $1")
            .bind(before.timestamp())
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(done.rows_affected())
    }
}
