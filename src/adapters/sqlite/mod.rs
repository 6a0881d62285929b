//! SQLite repositories, the embedded default. Ids are TEXT, lists JSON arrays and times INTEGER
//! microseconds since the epoch, so ordering and range filters compare numbers.

mod apikeys;
mod audit;
mod queue;
mod ratelimit;
mod webhooks;

pub use apikeys::SqliteApiKeyRepo;
pub use audit::SqliteAuditLog;
pub use queue::SqliteCommandQueue;
pub use ratelimit::SqliteRateLimiter;
pub use webhooks::SqliteWebhooks;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::db::corrupt;
use crate::domain::DomainError;

pub(crate) fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

pub(crate) fn from_micros(raw: i64) -> Result<DateTime<Utc>, DomainError> {
    DateTime::from_timestamp_micros(raw).ok_or_else(|| corrupt("timestamp", raw))
}

pub(crate) fn opt_from_micros(raw: Option<i64>) -> Result<Option<DateTime<Utc>>, DomainError> {
    raw.map(from_micros).transpose()
}

pub(crate) fn uuid_from_text(raw: &str) -> Result<Uuid, DomainError> {
    Uuid::parse_str(raw).map_err(|e| corrupt("id", e))
}
