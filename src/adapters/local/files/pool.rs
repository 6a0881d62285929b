//! The pool file work runs on: at most `workers` file system calls at once, on tokio's blocking
//! threads. Every job is short (one chunk of a file, one page of a folder, one slice of a
//! deletion), so a request holds a thread only while the kernel works for it, never while its
//! client is slow; and since file work takes at most `workers` of tokio's blocking threads, the
//! project lookups and the rest of the server's blocking work always find one free.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::domain::DomainError;

#[derive(Clone)]
pub struct FilePool {
    permits: Arc<Semaphore>,
}

impl FilePool {
    pub fn new(workers: usize) -> Self {
        Self { permits: Arc::new(Semaphore::new(workers.max(1))) }
    }

    /// Runs `job` on a blocking thread once one of the pool's places is free.
    pub async fn run<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> Result<T, DomainError> {
        let permit = self.permits.clone().acquire_owned().await.map_err(DomainError::internal)?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            job()
        })
        .await
        .map_err(|error| DomainError::internal(anyhow::Error::new(error).context("a file operation's task")))
    }
}
