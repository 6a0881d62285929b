//! A command's stored output log: written in batches while it runs (`OutputWriter`), read
//! back whole (`OutputService::kept`) or followed live and resumed from any replica
//! (`OutputService::follow`, see `follow`). A follower reads only the stored log, so what it
//! sees live is exactly what a replay shows later.

use std::{sync::Arc, time::Duration};

use futures_util::{Stream as FutureStream, future::BoxFuture};
use tokio::{sync::mpsc, time::Instant};
use uuid::Uuid;

use super::follow::{FollowLimits, Followers};
use crate::{
    domain::{Command, CommandReader, DomainError, EntryKind, OutputEntry, Stream, TailSnapshot},
    ports::{CommandQueue, OutputChunk, OutputLog, OutputSink},
};

/// A batch is written once it is this old…
const BATCH_TIME: Duration = Duration::from_millis(100);
/// …or this big, or has this many entries, whichever comes first.
const BATCH_BYTES: usize = 64 * 1024;
const BATCH_ENTRIES: usize = 256;
/// Entries read per query.
const PAGE: u32 = 256;

/// Stores the row that makes a command run now followable (`CommandQueue::store_now`).
pub type OpenRun = Box<dyn FnOnce() -> BoxFuture<'static, Result<(), DomainError>> + Send>;

/// Writes one run's output to the log as it arrives. `write` runs beside the executor (joined,
/// not spawned: no task and no hand-off per command) and ends when the executor's sink is gone.
pub struct OutputWriter {
    sink: mpsc::UnboundedSender<OutputChunk>,
    writer: Writer,
    open: Option<OpenRun>,
}

/// What a writer did not store: a short run's whole output (to be stored with its audit entry),
/// or what failed to be written.
#[derive(Debug, Default)]
pub struct Unwritten {
    pub entries: Vec<OutputEntry>,
    /// Whether the run became followable (its row and output were stored while it ran).
    pub opened: bool,
}

impl OutputWriter {
    /// For a queued `command`, numbering after what its `earlier_attempts` stored (asked of the
    /// log only when there were any).
    pub async fn start(log: Arc<dyn OutputLog>, command: Uuid, earlier_attempts: u32) -> Self {
        let base = match earlier_attempts {
            0 => 0,
            _ => log.last_seq(command).await.unwrap_or_else(|error| {
                tracing::warn!(%error, "could not read the output log; numbering from 1");
                0
            }),
        };
        Self::new(log, command, base, None, None)
    }

    /// For a command run now: its entries go on to `live` at once, and are stored only if it
    /// runs longer than one batch, after `open` stored its row; a shorter one's output is
    /// returned by `write`, to go into the one commit of its end.
    pub fn deferred(log: Arc<dyn OutputLog>, command: Uuid, open: OpenRun, live: OutputSink) -> Self {
        Self::new(log, command, 0, Some(open), live)
    }

    fn new(log: Arc<dyn OutputLog>, command: Uuid, base: u64, open: Option<OpenRun>, live: OutputSink) -> Self {
        let (sink, entries) = mpsc::unbounded_channel();
        // A queued command's tails are stored from the start; a command run now's once opened.
        let storing_tails = open.is_none();
        let writer =
            Writer { log, command, base, live, entries, batch: Batch::default(), tails: Vec::new(), storing_tails };
        Self { sink, writer, open }
    }

    /// Where the executor sends the entries (bounded by the output budget, so unbounded here).
    pub fn sink(&self) -> OutputSink {
        Some(self.sink.clone())
    }

    /// Stores the entries until every sink handed out is dropped (the executor returned); what
    /// it did not store.
    pub async fn write(self) -> Unwritten {
        drop(self.sink);
        self.writer.run(self.open).await
    }
}

struct Writer {
    log: Arc<dyn OutputLog>,
    command: Uuid,
    base: u64,
    live: OutputSink,
    entries: mpsc::UnboundedReceiver<OutputChunk>,
    batch: Batch,
    /// The latest tail of each stream not stored yet.
    tails: Vec<TailSnapshot>,
    storing_tails: bool,
}

/// What waiting for the next entry gave.
enum Next {
    Entry,
    /// The run is over: its sink was dropped.
    End,
    Due,
}

impl Writer {
    /// Takes the next entry into the batch (and on to `live`), waiting until `deadline` at most.
    async fn next_until(&mut self, deadline: Option<Instant>) -> Next {
        let received = match deadline {
            None => self.entries.recv().await,
            Some(deadline) => match tokio::time::timeout_at(deadline, self.entries.recv()).await {
                Ok(received) => received,
                Err(_elapsed) => return Next::Due,
            },
        };
        match received {
            None => Next::End,
            Some(OutputChunk::Entry(entry)) => {
                if let Some(live) = &self.live {
                    // A closed receiver means nobody watches any more; the output is still kept.
                    let _ = live.send(OutputChunk::Entry(entry.clone()));
                }
                self.batch.push(entry, self.base);
                Next::Entry
            }
            Some(OutputChunk::Tail(tail)) => {
                if self.storing_tails {
                    self.tails.retain(|kept| kept.stream != tail.stream);
                    self.tails.push(tail);
                }
                Next::Entry
            }
        }
    }

    /// Writes the batch, then the tails that came since the last write.
    async fn flush(&mut self) {
        self.batch.write(self.log.as_ref(), self.command).await;
        for tail in std::mem::take(&mut self.tails) {
            if let Err(error) = self.log.save_tail(self.command, &tail).await {
                tracing::warn!(%error, command.id = %self.command, "could not store a tail; the next one will be");
            }
        }
    }

    async fn run(mut self, open: Option<OpenRun>) -> Unwritten {
        if let Some(open) = open {
            let deadline = Instant::now() + BATCH_TIME;
            loop {
                match self.next_until(Some(deadline)).await {
                    Next::Entry => {}
                    Next::End => return Unwritten { entries: self.batch.entries, opened: false },
                    Next::Due => break,
                }
            }
            // Still running after a batch's time: from now on it can be followed.
            if let Err(error) = open().await {
                tracing::warn!(%error, command.id = %self.command, "could not store a running command");
            }
            self.storing_tails = true;
            self.flush().await;
        }
        // A batch starts with an entry that may be long in coming, then is due after BATCH_TIME.
        while let Next::Entry = self.next_until(None).await {
            let deadline = Instant::now() + BATCH_TIME;
            let mut ended = false;
            while !self.batch.is_full() {
                match self.next_until(Some(deadline)).await {
                    Next::Entry => {}
                    Next::End => {
                        ended = true;
                        break;
                    }
                    Next::Due => break,
                }
            }
            self.flush().await;
            if ended {
                break;
            }
        }
        if !self.batch.entries.is_empty() {
            // What a failed write left: one last try, then it goes back to the caller.
            self.batch.write(self.log.as_ref(), self.command).await;
        }
        Unwritten { entries: self.batch.entries, opened: true }
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

/// Who follows a command: the key (its followers are counted), which commands it reads, and
/// how many it may follow at once here (its `followers` quota).
#[derive(Debug, Clone, Copy)]
pub struct FollowedBy {
    pub key: Option<Uuid>,
    pub reader: CommandReader,
    pub quota: u32,
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
    followers: Followers,
}

impl OutputService {
    pub fn new(log: Arc<dyn OutputLog>, commands: Arc<dyn CommandQueue>, limits: FollowLimits) -> Self {
        let followers = Followers::new(log.clone(), commands.clone(), limits);
        Self { log, commands, followers }
    }

    /// Command `id`, if `reader` may read it (404 otherwise, as if it did not exist).
    async fn command(&self, id: Uuid, reader: CommandReader) -> Result<Command, DomainError> {
        self.commands
            .get(id)
            .await?
            .filter(|command| reader.may_read(command))
            .ok_or_else(|| DomainError::not_found("command", id.to_string()))
    }

    /// The kept bytes of `stream` (head, then tail once the command ended, or the tail stored
    /// while it ran where it never stored its end) and how many were dropped.
    pub async fn kept(&self, id: Uuid, stream: Stream, reader: CommandReader) -> Result<KeptOutput, DomainError> {
        // The status first: a final one means every entry was stored before it.
        let complete = self.command(id, reader).await?.status.is_final();
        let mut entries = all_entries(self.log.as_ref(), id).await?;
        let mut ends = LogEnds::default();
        entries.iter().for_each(|entry| ends.add(entry));
        let tails = ends.tail_entries(&self.log.tails(id).await?);
        entries.extend(tails);
        let mut kept = KeptOutput { bytes: Vec::new(), omitted_bytes: 0, complete };
        for entry in entries.into_iter().filter(|e| e.stream == stream) {
            match entry.kind {
                EntryKind::Data(bytes) => kept.bytes.extend_from_slice(&bytes),
                EntryKind::Gap { bytes } => kept.omitted_bytes += bytes,
            }
        }
        Ok(kept)
    }

    /// The command's log after `after`, live while it runs, then its end, for `by`. Refuses an
    /// unknown command (or one `by` may not read), and a follower past the caps (429), at once;
    /// later errors (the database went away) end the stream with the error.
    pub async fn follow(
        &self,
        by: FollowedBy,
        id: Uuid,
        after: u64,
    ) -> Result<impl FutureStream<Item = Result<Followed, DomainError>> + Send + use<>, DomainError> {
        if by.reader != CommandReader::Admin {
            self.command(id, by.reader).await?;
        }
        self.followers.follow(by.key, by.quota, id, after).await
    }
}

/// Every entry of a command's log, in order (bounded by its output budget).
async fn all_entries(log: &dyn OutputLog, id: Uuid) -> Result<Vec<OutputEntry>, DomainError> {
    let mut entries: Vec<OutputEntry> = Vec::new();
    loop {
        let after = entries.last().map_or(0, |e| e.seq);
        let page = log.after(id, after, PAGE).await?;
        if page.is_empty() {
            return Ok(entries);
        }
        entries.extend(page);
    }
}

/// How far a log reaches: its last `seq` and the end offset of each stream, taken entry by
/// entry (so a whole log need not be held to know it).
#[derive(Debug, Default)]
pub(super) struct LogEnds {
    pub last_seq: u64,
    stdout: u64,
    stderr: u64,
}

impl LogEnds {
    pub fn add(&mut self, entry: &OutputEntry) {
        let end = match &entry.kind {
            EntryKind::Data(bytes) => entry.offset + bytes.len() as u64,
            EntryKind::Gap { bytes } => entry.offset + bytes,
        };
        let of_stream = match entry.stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        *of_stream = (*of_stream).max(end);
        self.last_seq = self.last_seq.max(entry.seq);
    }

    /// What `tails` hold beyond the end of each stream (a command that never stored its end),
    /// as the entries its end would have added: the gap up to the tail, then the tail's bytes
    /// past what the log has, numbered after `last_seq`.
    pub fn tail_entries(&self, tails: &[TailSnapshot]) -> Vec<OutputEntry> {
        let mut seq = self.last_seq;
        let mut extra = Vec::new();
        for tail in tails {
            let end_of_log = match tail.stream {
                Stream::Stdout => self.stdout,
                Stream::Stderr => self.stderr,
            };
            let tail_end = tail.offset + tail.data.len() as u64;
            if tail_end <= end_of_log {
                continue;
            }
            let mut entry = |offset, kind| {
                seq += 1;
                extra.push(OutputEntry { seq, stream: tail.stream, offset, kind });
            };
            if tail.offset > end_of_log {
                entry(end_of_log, EntryKind::Gap { bytes: tail.offset - end_of_log });
            }
            let skip = end_of_log.saturating_sub(tail.offset) as usize;
            entry(tail.offset.max(end_of_log), EntryKind::Data(tail.data[skip..].to_vec()));
        }
        extra
    }
}
