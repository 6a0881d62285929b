//! Group commit: callers hand their rows to one writer task, which commits every row waiting in
//! one transaction (or one call) and then answers each caller with its own result. Requests that arrive together share one BEGIN
//! and one COMMIT (one WAL flush on Postgres, one round of hand-offs to SQLite's thread) instead
//! of queueing with a transaction each; a caller still returns only after its row is committed.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use crate::domain::DomainError;

/// Most rows committed in one transaction.
const MAX_BATCH: usize = 64;

/// Writes a batch in one transaction: all of it, or none. Returns one output per item, in order.
#[async_trait]
pub(crate) trait BatchWriter: Send + Sync + 'static {
    type Item: Send + 'static;
    type Output: Send + 'static;

    async fn write(&self, batch: &[Self::Item]) -> Result<Vec<Self::Output>, DomainError>;
}

type Waiting<W> = (<W as BatchWriter>::Item, oneshot::Sender<Result<<W as BatchWriter>::Output, DomainError>>);

pub(crate) struct GroupCommit<W: BatchWriter> {
    writer: Arc<W>,
    /// Started by the first row, so building an adapter needs no runtime.
    queue: OnceLock<mpsc::Sender<Waiting<W>>>,
}

impl<W: BatchWriter> GroupCommit<W> {
    pub(crate) fn new(writer: W) -> Self {
        Self { writer: Arc::new(writer), queue: OnceLock::new() }
    }

    /// Returns once `item` is committed (or its batch failed), with its output.
    pub(crate) async fn submit(&self, item: W::Item) -> Result<W::Output, DomainError> {
        let queue = self.queue.get_or_init(|| {
            let (sender, receiver) = mpsc::channel(1024);
            tokio::spawn(run(self.writer.clone(), receiver));
            sender
        });
        let (committed, commit) = oneshot::channel();
        let stopped = || DomainError::Unavailable("the database writer has stopped".into());
        queue.send((item, committed)).await.map_err(|_| stopped())?;
        commit.await.map_err(|_| stopped())?
    }
}

async fn run<W: BatchWriter>(writer: Arc<W>, mut queue: mpsc::Receiver<Waiting<W>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (items, callers): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
        match writer.write(&items).await {
            Ok(outputs) if outputs.len() == callers.len() => {
                for (caller, output) in callers.into_iter().zip(outputs) {
                    let _ = caller.send(Ok(output));
                }
            }
            Ok(_) => callers.into_iter().for_each(|caller| {
                let _ = caller.send(Err(DomainError::internal(anyhow::anyhow!("a batch answered the wrong count"))));
            }),
            Err(error) => callers.into_iter().for_each(|caller| {
                let _ = caller.send(Err(share(&error)));
            }),
        }
    }
}

/// The batch's error for each of its callers (`DomainError` is not `Clone`).
fn share(error: &DomainError) -> DomainError {
    match error {
        DomainError::Unavailable(why) => DomainError::Unavailable(why.clone()),
        other => DomainError::internal(anyhow::anyhow!("writing a batch: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Records batch sizes; fails batches holding a 0.
    #[derive(Default)]
    struct Sizes(Mutex<Vec<usize>>);

    #[async_trait]
    impl BatchWriter for Sizes {
        type Item = u32;
        type Output = u32;

        async fn write(&self, batch: &[u32]) -> Result<Vec<u32>, DomainError> {
            self.0.lock().unwrap().push(batch.len());
            tokio::task::yield_now().await;
            if batch.contains(&0) {
                Err(DomainError::Unavailable("down".into()))
            } else {
                Ok(batch.iter().map(|n| n * 2).collect())
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_rows_share_batches_and_every_caller_gets_the_result() {
        let group = Arc::new(GroupCommit::new(Sizes::default()));
        let tasks: Vec<_> = (1..=200)
            .map(|n| {
                tokio::spawn({
                    let group = group.clone();
                    async move { group.submit(n).await }
                })
            })
            .collect();
        for (n, task) in (1..).zip(tasks) {
            assert_eq!(task.await.unwrap().unwrap(), n * 2, "each caller gets its own output");
        }
        let sizes = group.writer.0.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 200);
        assert!(sizes.iter().all(|n| *n <= MAX_BATCH));
        assert!(matches!(group.submit(0).await, Err(DomainError::Unavailable(_))));
    }
}
