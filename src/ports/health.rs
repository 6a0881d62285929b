//! Readiness checks reported by `GET /ready`.

use async_trait::async_trait;

#[async_trait]
pub trait HealthCheck: Send + Sync {
    /// The name shown under `checks` in `/ready`, e.g. `database`.
    fn name(&self) -> &'static str;

    /// `Ok` with a short status (`ok`, or e.g. `circuit open` for a degraded but non-fatal
    /// state), or `Err` with a reason when the dependency cannot serve requests now.
    async fn check(&self) -> Result<String, String>;
}

/// Whether the database is known to be down right now, answered from memory: services refuse
/// work they could not record (a command whose audit row could not be written) before
/// starting it.
pub trait StorageStatus: Send + Sync {
    fn available(&self) -> bool;
}
