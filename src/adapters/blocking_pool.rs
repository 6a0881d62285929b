//! Readiness of tokio's blocking pool, where project lookups, file work and the database's
//! SQLite calls run: if a job cannot start within a second, the project routes cannot be
//! served, and `/ready` says so (503) instead of answering `ok` from the async threads.

use std::time::Duration;

use async_trait::async_trait;

use crate::ports::HealthCheck;

/// How long a no-op job may wait for a blocking thread before the pool counts as full.
const WAIT: Duration = Duration::from_secs(1);

pub struct BlockingPoolHealth;

#[async_trait]
impl HealthCheck for BlockingPoolHealth {
    fn name(&self) -> &'static str {
        "blocking_pool"
    }

    async fn check(&self) -> Result<String, String> {
        match tokio::time::timeout(WAIT, tokio::task::spawn_blocking(|| ())).await {
            Ok(Ok(())) => Ok("ok".into()),
            Ok(Err(error)) => Err(format!("a job failed: {error}")),
            Err(_) => Err(format!("no thread took a job within {WAIT:?}")),
        }
    }
}
