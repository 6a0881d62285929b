//! Business rules, written against ports only: no HTTP, SQL or process handling here.

pub mod apikeys;
pub mod audit;
pub mod commands;
pub mod projects;

pub use apikeys::{ApiKeyService, NewApiKey};
pub use audit::AuditService;
pub use commands::CommandService;
pub use projects::ProjectService;
