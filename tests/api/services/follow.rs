//! Following on fakes of the log and the queue, counting what the followers cost the log:
//! three hundred followers of one command read its output once between them (the feed's, held
//! in its window), and its end is computed once; the caps answer 429.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use rdev_api::{
    domain::{CommandReader, CommandStatus, DomainError, EntryKind, OutputEntry, Stream, TailSnapshot},
    ports::{CommandQueue, OutputLog},
    services::{FollowLimits, Followed, FollowedBy, OutputService},
};
use tokio::sync::Notify;
use uuid::Uuid;

use super::QueueRig;
use crate::support::fakes::MemoryOutputLog;

/// The in-memory log, counting the bytes its readers took and the reads of tails.
#[derive(Default)]
struct CountingLog {
    inner: MemoryOutputLog,
    bytes_read: AtomicU64,
    tail_reads: AtomicU64,
}

#[async_trait]
impl OutputLog for CountingLog {
    async fn append(&self, command: Uuid, entries: &[OutputEntry]) -> Result<(), DomainError> {
        self.inner.append(command, entries).await
    }
    async fn after(&self, command: Uuid, after: u64, limit: u32) -> Result<Vec<OutputEntry>, DomainError> {
        let page = self.inner.after(command, after, limit).await?;
        let bytes: usize = page.iter().map(|e| if let EntryKind::Data(d) = &e.kind { d.len() } else { 0 }).sum();
        self.bytes_read.fetch_add(bytes as u64, Ordering::Relaxed);
        Ok(page)
    }
    async fn last_seq(&self, command: Uuid) -> Result<u64, DomainError> {
        self.inner.last_seq(command).await
    }
    async fn save_tail(&self, command: Uuid, tail: &TailSnapshot) -> Result<(), DomainError> {
        self.inner.save_tail(command, tail).await
    }
    async fn tails(&self, command: Uuid) -> Result<Vec<TailSnapshot>, DomainError> {
        self.tail_reads.fetch_add(1, Ordering::Relaxed);
        self.inner.tails(command).await
    }
    async fn announce(&self, command: Uuid) -> Result<(), DomainError> {
        self.inner.announce(command).await
    }
    fn changes(&self, command: Uuid) -> Arc<Notify> {
        self.inner.changes(command)
    }
    async fn purge(&self, before: DateTime<Utc>) -> Result<u64, DomainError> {
        self.inner.purge(before).await
    }
}

const CHUNK: usize = 64 * 1024;

fn entry(seq: u64) -> OutputEntry {
    let offset = (seq - 1) * CHUNK as u64;
    OutputEntry { seq, stream: Stream::Stdout, offset, kind: EntryKind::Data(vec![b'x'; CHUNK]) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_followers_read_the_log_once_between_them() {
    let rig = QueueRig::new();
    let log = Arc::new(CountingLog::default());
    let limits = FollowLimits { per_replica: 1000, reads: 2 };
    let output = Arc::new(OutputService::new(log.clone(), rig.queue.clone(), limits));
    let mut command = rig.enqueue("hello", "make").await;
    command.status = CommandStatus::Running;
    rig.queue.store_now(&command, "worker-1", Utc::now()).await.unwrap();
    // What came before anyone followed: each follower catches up on it from the log.
    log.append(command.id, &[entry(1)]).await.unwrap();

    let key = Some(Uuid::new_v4());
    let mut followers = Vec::new();
    for _ in 0..300 {
        let followed = output.follow(by(key, 1000), command.id, 0).await.unwrap();
        followers.push(tokio::spawn(followed.collect::<Vec<_>>()));
    }
    // 768 KiB more while they follow, in batches, then the end.
    for batch in 0..4 {
        let entries: Vec<_> = (0..3).map(|i| entry(2 + batch * 3 + i)).collect();
        log.append(command.id, &entries).await.unwrap();
        tokio::task::yield_now().await;
    }
    command.status = CommandStatus::Succeeded;
    rig.queue.store_now(&command, "worker-1", Utc::now()).await.unwrap();
    log.announce(command.id).await.unwrap();

    for follower in followers {
        let events = follower.await.unwrap();
        let entries = events.iter().filter(|e| matches!(e, Ok(Followed::Entry(_)))).count();
        assert_eq!(entries, 13, "every entry, once");
        assert!(matches!(events.last(), Some(Ok(Followed::Exit { id: 14, .. }))), "{:?}", events.last());
    }
    let (read, tails) = (log.bytes_read.load(Ordering::Relaxed), log.tail_reads.load(Ordering::Relaxed));
    let output_bytes = 13 * CHUNK as u64;
    println!("300 followers of {output_bytes} bytes read {read} bytes of log, tails {tails} times");
    assert_eq!(tails, 1, "the end is computed once");
    // The feed's pass and the end's: the followers took it all from the feed's window.
    assert!(read <= 2 * output_bytes, "{read} bytes read for {output_bytes} of output");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_past_a_cap_get_too_busy() {
    let rig = QueueRig::new();
    let log = Arc::new(CountingLog::default());
    let limits = FollowLimits { per_replica: 3, reads: 1 };
    let output = OutputService::new(log.clone(), rig.queue.clone(), limits);
    let command = rig.enqueue("hello", "make").await;
    let (one, other) = (Some(Uuid::new_v4()), Some(Uuid::new_v4()));
    let first = output.follow(by(one, 2), command.id, 0).await.unwrap();
    let _second = output.follow(by(one, 2), command.id, 0).await.unwrap();
    assert!(
        matches!(output.follow(by(one, 2), command.id, 0).await.err(), Some(DomainError::QuotaExceeded { max: 2, message: m, .. }) if m.contains("RDEV_MAX_FOLLOWERS_PER_KEY"))
    );
    let _third = output.follow(by(other, 2), command.id, 0).await.unwrap();
    assert!(
        matches!(output.follow(by(other, 2), command.id, 0).await.err(), Some(DomainError::TooBusy(m)) if m.contains("RDEV_MAX_FOLLOWERS"))
    );
    drop(first);
    assert!(output.follow(by(other, 2), command.id, 0).await.is_ok(), "a seat given back is taken again");
}

/// `key` following as `admin` would, with a quota of `quota` followers.
fn by(key: Option<uuid::Uuid>, quota: u32) -> FollowedBy {
    FollowedBy { key, reader: CommandReader::Admin, quota }
}
