//! moka decorators that keep hot lookups off the database (API keys, for `CACHE_TTL`) and off
//! the disk (local project folders, for at most a second).

mod keys;
mod projects;

pub use keys::CachedApiKeyRepo;
pub use projects::CachedProjectSource;
