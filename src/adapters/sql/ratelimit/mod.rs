//! `RateLimiter` on SQL: the one port whose storage differs in kind, not just in SQL text.
//! Postgres decides a batch of hits in one call of a SQL function under per-key advisory
//! locks, so replicas share one limit; SQLite checks and counts in one write transaction.

mod postgres;
mod sqlite;

pub use postgres::PgRateLimiter;
pub use sqlite::SqliteRateLimiter;
