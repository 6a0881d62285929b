//! moka decorators that keep hot lookups off the database and the Kubernetes API for `CACHE_TTL`.

mod keys;
mod projects;

pub use keys::CachedApiKeyRepo;
pub use projects::CachedProjectSource;
