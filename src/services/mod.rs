//! Business rules, written against ports only: no HTTP, SQL or process handling here.

pub mod apikeys;
pub mod audit;
pub mod commands;
pub mod projects;
pub mod ratelimit;
pub mod usage;

pub use apikeys::{ApiKeyChanges, ApiKeyService, NewApiKey};
pub use audit::AuditService;
pub use commands::CommandService;
pub use projects::ProjectService;
pub use ratelimit::RateLimitService;
pub use usage::UsageTracker;
