//! Postgres repositories: native `uuid`, `timestamptz` and `text[]` columns. Production runs
//! several replicas on one Postgres, so anything that must hold across replicas is decided here
//! in SQL (advisory locks, `ON CONFLICT`), never in process memory.

mod apikeys;
mod audit;
mod queue;
mod ratelimit;
mod webhooks;

pub use apikeys::PgApiKeyRepo;
pub use audit::PgAuditLog;
pub use queue::PgCommandQueue;
pub use ratelimit::PgRateLimiter;
pub use webhooks::PgWebhooks;
