//! The storage ports on SQL: Postgres (production, several replicas) and SQLite (one node).
//!
//! Each repository is written once, generic over `D: Dialect`; the SQL text and the locking
//! are chosen per dialect only where they differ (see `dialect`).
//!
//! # Layout
//! - `database`: picking the database by `DATABASE_URL`, pools, embedded migrations, and the
//!   factories of every repository.
//! - `dialect`: Postgres and SQLite behind one interface (binding, running, write transactions).
//! - `values`: how a value is stored, read back (`Row`).
//! - `errors`: driver errors as domain errors, in one place.
//! - `command_rows`: a command as a row, read and written (the queue and the audit writer).
//! - one file per port: `keys`, `audit`, `queue`, `webhooks`, `deliveries`,
//!   `idempotency`, `output` (command output logs), `sessions`, `tickets` (terminals); `outbox` for the
//!   webhook events the others write in their own transactions; `ratelimit` per dialect.
//! - `group_commit`: one writer task that commits concurrent rows in one transaction.

mod audit;
mod command_rows;
pub mod database;
mod deliveries;
mod dialect;
mod errors;
mod group_commit;
mod health;
mod idempotency;
mod keys;
mod outbox;
mod output;
mod queue;
mod ratelimit;
mod sessions;
mod tickets;
mod values;
mod webhooks;

use audit::SqlAuditLog;
pub use database::Database;
use deliveries::SqlDeliveries;
use idempotency::SqlIdempotency;
use keys::SqlApiKeys;
use output::SqlOutputLog;
use queue::SqlCommandQueue;
use ratelimit::{PgRateLimiter, SqliteRateLimiter};
use sessions::SqlSessions;
use tickets::SqlTickets;
use webhooks::SqlWebhooks;
