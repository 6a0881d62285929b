//! Readiness checks reported by `GET /ready`.

use async_trait::async_trait;

#[async_trait]
pub trait HealthCheck: Send + Sync {
    /// The name shown under `checks` in `/ready`, e.g. `database`.
    fn name(&self) -> &'static str;

    /// `Err` with a short reason when the dependency cannot serve requests now.
    async fn check(&self) -> Result<(), String>;
}
