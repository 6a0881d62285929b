//! A command's stored output log: written in batches while it runs (`OutputWriter`), read
//! back whole (`OutputService::kept`) or followed live and resumed from any replica
//! (`OutputService::follow`). A follower reads only the stored log, so what it sees live is
//! exactly what a replay shows later.

use std::{sync::Arc, time::Duration};

use futures_util::Stream as FutureStream;
use tokio::{sync::mpsc, task::JoinHandle, time::Instant};
use uuid::Uuid;

use crate::{
    domain::{Command, DomainError, EntryKind, OutputEntry, Stream},
    ports::{CommandQueue, OutputLog, OutputSink},
};

/// A batch is written once it is this old…
const BATCH_TIME: Duration = Duration::from_millis(100);
/// …or this big, or has this many entries, whichever comes first.
const BATCH_BYTES: usize = 64 * 1024;
const BATCH_ENTRIES: usize = 256;
/// Entries a follower reads per query.
const FOLLOW_PAGE: u32 = 256;
/// How often a follower looks again without being woken (a missed notification, a replica
/// that died with the command): the most a follower can lag.
const FOLLOW_POLL: Duration = Duration::from_secs(1);

/// Writes one run's output to the log as it arrives.
pub struct OutputWriter {
    sink: mpsc::UnboundedSender<OutputEntry>,
    task: JoinHandle<()>,
}

impl OutputWriter {
    /// For `command`, numbering after what earlier attempts of it stored.
    pub async fn start(log: Arc<dyn OutputLog>, command: Uuid) -> Self {
        let base = match log.last_seq(command).await {
            Ok(seq) => seq,
            Err(error) => {
                tracing::warn!(%error, "could not read the output log; numbering from 1");
                0
            }
        };
        let (sink, entries) = mpsc::unbounded_channel();
        let task = tokio::spawn(write_batches(log, command, base, entries));
        Self { sink, task }
    }

    /// Where the executor sends the entries (bounded by the output budget, so unbounded here).
    pub fn sink(&self) -> OutputSink {
        Some(self.sink.clone())
    }

    /// Waits until every entry sent (the executor has returned and dropped its sink) is stored.
    pub async fn finish(self) {
        drop(self.sink);
        let _ = self.task.await;
    }
}

async fn write_batches(
    log: Arc<dyn OutputLog>,
    command: Uuid,
    base: u64,
    mut entries: mpsc::UnboundedReceiver<OutputEntry>,
) {
    let mut batch = Batch::default();
    while let Some(first) = entries.recv().await {
        batch.push(first, base);
        let deadline = Instant::now() + BATCH_TIME;
        let mut open = true;
        while !batch.is_full() {
            match tokio::time::timeout_at(deadline, entries.recv()).await {
                Ok(Some(entry)) => batch.push(entry, base),
                Ok(None) => {
                    open = false;
                    break;
                }
                Err(_elapsed) => break,
            }
        }
        batch.write(log.as_ref(), command).await;
        if !open {
            break;
        }
    }
    if !batch.entries.is_empty() {
        // What a failed write left: one last try.
        batch.write(log.as_ref(), command).await;
    }
}

#[derive(Default)]
struct Batch {
    entries: Vec<OutputEntry>,
    bytes: usize,
}

impl Batch {
    fn push(&mut self, mut entry: OutputEntry, base: u64) {
        entry.seq += base;
        if let EntryKind::Data(data) = &entry.kind {
            self.bytes += data.len();
        }
        self.entries.push(entry);
    }

    fn is_full(&self) -> bool {
        self.bytes >= BATCH_BYTES || self.entries.len() >= BATCH_ENTRIES
    }

    /// Writes the batch; kept for the next write if it fails (bounded by the output budget).
    async fn write(&mut self, log: &dyn OutputLog, command: Uuid) {
        match log.append(command, &self.entries).await {
            Ok(()) => *self = Self::default(),
            Err(error) => tracing::warn!(%error, command.id = %command, "could not store output; will retry"),
        }
    }
}

/// What a follower receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Followed {
    Entry(OutputEntry),
    /// The command ended: its final state, and the id of this last event (one past the last
    /// entry's `seq`).
    Exit {
        command: Box<Command>,
        id: u64,
    },
}

/// What is kept of one stream of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptOutput {
    pub bytes: Vec<u8>,
    pub omitted_bytes: u64,
    /// Whether the command has ended (else more may come).
    pub complete: bool,
}

pub struct OutputService {
    log: Arc<dyn OutputLog>,
    commands: Arc<dyn CommandQueue>,
}

impl OutputService {
    pub fn new(log: Arc<dyn OutputLog>, commands: Arc<dyn CommandQueue>) -> Self {
        Self { log, commands }
    }

    async fn command(&self, id: Uuid) -> Result<Command, DomainError> {
        self.commands.get(id).await?.ok_or_else(|| DomainError::not_found("command", id.to_string()))
    }

    /// The kept bytes of `stream` (head, then tail once the command ended) and how many were dropped.
    pub async fn kept(&self, id: Uuid, stream: Stream) -> Result<KeptOutput, DomainError> {
        // The status first: a final one means every entry was stored before it.
        let complete = self.command(id).await?.status.is_final();
        let mut kept = KeptOutput { bytes: Vec::new(), omitted_bytes: 0, complete };
        let mut after = 0;
        loop {
            let page = self.log.after(id, after, FOLLOW_PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for entry in page.into_iter().filter(|e| e.stream == stream) {
                match entry.kind {
                    EntryKind::Data(bytes) => kept.bytes.extend_from_slice(&bytes),
                    EntryKind::Gap { bytes } => kept.omitted_bytes += bytes,
                }
            }
        }
        Ok(kept)
    }

    /// The command's log after `after`, live while it runs, then its end. Refuses an unknown
    /// command at once; later errors (the database went away) end the stream with the error.
    pub async fn follow(
        &self,
        id: Uuid,
        after: u64,
    ) -> Result<impl FutureStream<Item = Result<Followed, DomainError>> + Send + use<>, DomainError> {
        self.command(id).await?;
        let follower = Follower {
            id,
            after,
            log: self.log.clone(),
            commands: self.commands.clone(),
            pending: Vec::new().into_iter(),
            done: false,
        };
        Ok(futures_util::stream::unfold(follower, |mut follower| async move {
            let next = follower.next().await?;
            Some((next, follower))
        }))
    }
}

struct Follower {
    id: Uuid,
    after: u64,
    log: Arc<dyn OutputLog>,
    commands: Arc<dyn CommandQueue>,
    pending: std::vec::IntoIter<OutputEntry>,
    done: bool,
}

impl Follower {
    async fn next(&mut self) -> Option<Result<Followed, DomainError>> {
        if self.done {
            return None;
        }
        loop {
            if let Some(entry) = self.pending.next() {
                self.after = entry.seq;
                return Some(Ok(Followed::Entry(entry)));
            }
            let changes = self.log.changes();
            let woken = changes.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            match self.read().await {
                Ok(Some(exit)) => {
                    self.done = true;
                    return exit.map(Ok);
                }
                Ok(None) if self.pending.len() > 0 => continue,
                Ok(None) => {}
                Err(error) => {
                    self.done = true;
                    return Some(Err(error));
                }
            }
            let _ = tokio::time::timeout(FOLLOW_POLL, woken).await;
        }
    }

    /// Reads what came after `after` into `pending`; when nothing did and the command has
    /// ended, its exit (`Some(None)` when the client already had it).
    async fn read(&mut self) -> Result<Option<Option<Followed>>, DomainError> {
        let page = self.log.after(self.id, self.after, FOLLOW_PAGE).await?;
        if !page.is_empty() {
            self.pending = page.into_iter();
            return Ok(None);
        }
        let command = self.commands.get(self.id).await?.ok_or_else(|| DomainError::not_found("command", ""))?;
        if !command.status.is_final() {
            return Ok(None);
        }
        // Ended: entries stored before the status changed may have come since the read above.
        let page = self.log.after(self.id, self.after, FOLLOW_PAGE).await?;
        if !page.is_empty() {
            self.pending = page.into_iter();
            return Ok(None);
        }
        let id = self.log.last_seq(self.id).await? + 1;
        Ok(Some((self.after < id).then(|| Followed::Exit { command: Box::new(command), id })))
    }
}
