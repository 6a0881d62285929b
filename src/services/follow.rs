//! Following a command's log live, at the cost of one reader per command, not per follower.
//!
//! Each command followed on this replica has one `Feed`: a task that reads the log once, from
//! its start, as the command's own wake-up comes (or every `FOLLOW_POLL`, for a wake-up that was
//! missed or a replica that died), keeps the latest `WINDOW_BYTES` of it in memory and hands
//! each new batch to every follower through a broadcast; and that computes the command's end
//! once, when it ended. A follower takes what it has not seen from the window, then the
//! broadcast; it reads the log itself only for what is older than the window (resuming a long
//! log, or falling far behind), a page at a time.
//!
//! Every read of the log for followers takes one of `reads` permits, a fraction of the database
//! pool: however many follow, leases, claims and output writes always find a connection, and
//! followers wait their turn instead. Followers are capped per key and per replica (429).

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use futures_util::Stream as FutureStream;
use tokio::sync::{Semaphore, broadcast, watch};
use uuid::Uuid;

use super::output::{Followed, LogEnds};
use crate::{
    domain::{Command, DomainError, EntryKind, OutputEntry, Quota},
    ports::{CommandQueue, OutputLog},
};

/// Entries read per query.
const PAGE: u32 = 256;
/// How often a feed looks again without being woken: the most a follower can lag.
const FOLLOW_POLL: Duration = Duration::from_secs(1);
/// Batches a feed keeps for followers that are slower than the command (each at most `PAGE`
/// entries); one that falls further behind reads the log itself.
const BROADCAST_BATCHES: usize = 64;
/// The most of a command's latest output a feed keeps for its followers (a bound per followed
/// command: with `RDEV_MAX_FOLLOWERS` the bound of all feeds).
const WINDOW_BYTES: usize = 1024 * 1024;

/// The bounds of following.
#[derive(Debug, Clone, Copy)]
pub struct FollowLimits {
    /// Followers at once on this replica (`RDEV_MAX_FOLLOWERS`).
    pub per_replica: usize,
    /// Reads of the log for followers at once (a quarter of the database pool).
    pub reads: usize,
}

/// The followers of this replica.
pub struct Followers {
    log: Arc<dyn OutputLog>,
    commands: Arc<dyn CommandQueue>,
    limits: FollowLimits,
    reads: Arc<Semaphore>,
    feeds: Mutex<HashMap<Uuid, Weak<Feed>>>,
    seats: Arc<Mutex<Seats>>,
}

#[derive(Default)]
struct Seats {
    total: usize,
    of_key: HashMap<Option<Uuid>, usize>,
}

/// One follower's place, given back when it is dropped.
struct Seat {
    seats: Arc<Mutex<Seats>>,
    key: Option<Uuid>,
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut seats = self.seats.lock().unwrap_or_else(|p| p.into_inner());
        seats.total -= 1;
        if let Some(count) = seats.of_key.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                seats.of_key.remove(&self.key);
            }
        }
    }
}

impl Followers {
    pub fn new(log: Arc<dyn OutputLog>, commands: Arc<dyn CommandQueue>, limits: FollowLimits) -> Self {
        let reads = Arc::new(Semaphore::new(limits.reads.max(1)));
        Self { log, commands, limits, reads, feeds: Mutex::default(), seats: Arc::default() }
    }

    /// The log of command `id` after `after`, live while it runs, then its end, for `key`,
    /// which may follow `of_key` commands at once here. Refuses an unknown command at once, and
    /// a follower past the caps with 429.
    pub async fn follow(
        &self,
        key: Option<Uuid>,
        of_key: u32,
        id: Uuid,
        after: u64,
    ) -> Result<impl FutureStream<Item = Result<Followed, DomainError>> + Send + use<>, DomainError> {
        let seat = self.take_seat(key, of_key)?;
        let reader = Reader { log: self.log.clone(), commands: self.commands.clone(), permits: self.reads.clone() };
        reader.command(id).await?;
        let feed = self.feed(id, &reader);
        let follower = Follower {
            batches: feed.batches.subscribe(),
            end: feed.end.subscribe(),
            feed,
            _seat: seat,
            reader,
            id,
            after,
            pending: Vec::new().into_iter(),
            caught_up: false,
            done: false,
        };
        Ok(futures_util::stream::unfold(follower, |mut follower| async move {
            let next = follower.next().await?;
            Some((next, follower))
        }))
    }

    fn take_seat(&self, key: Option<Uuid>, quota: u32) -> Result<Seat, DomainError> {
        let mut seats = self.seats.lock().unwrap_or_else(|p| p.into_inner());
        let of_key = seats.of_key.get(&key).copied().unwrap_or(0);
        if seats.total >= self.limits.per_replica {
            return Err(DomainError::TooBusy(format!(
                "this server has {} followers, its most (RDEV_MAX_FOLLOWERS); try again shortly",
                self.limits.per_replica
            )));
        }
        if of_key >= quota as usize {
            return Err(Quota::Followers.exceeded(quota.into()));
        }
        seats.total += 1;
        *seats.of_key.entry(key).or_default() += 1;
        Ok(Seat { seats: self.seats.clone(), key })
    }

    /// The feed of command `id`, started if no one here follows it yet.
    fn feed(&self, id: Uuid, reader: &Reader) -> Arc<Feed> {
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(feed) = feeds.get(&id).and_then(Weak::upgrade) {
            return feed;
        }
        feeds.retain(|_, feed| feed.strong_count() > 0);
        let feed = Feed::start(id, reader.clone());
        feeds.insert(id, Arc::downgrade(&feed));
        feed
    }
}

/// Reads of the log and the queue, each under a permit.
#[derive(Clone)]
struct Reader {
    log: Arc<dyn OutputLog>,
    commands: Arc<dyn CommandQueue>,
    permits: Arc<Semaphore>,
}

impl Reader {
    async fn read<T>(&self, query: impl Future<Output = Result<T, DomainError>>) -> Result<T, DomainError> {
        let _permit = self.permits.acquire().await.map_err(DomainError::internal)?;
        query.await
    }

    async fn command(&self, id: Uuid) -> Result<Command, DomainError> {
        self.read(self.commands.get(id)).await?.ok_or_else(|| DomainError::not_found("command", id.to_string()))
    }

    async fn after(&self, id: Uuid, after: u64) -> Result<Vec<OutputEntry>, DomainError> {
        self.read(self.log.after(id, after, PAGE)).await
    }
}

/// How a followed command ended: its final state, what its stored tails add to the log (a
/// command whose replica died), and the exit event's id.
struct End {
    command: Command,
    /// The last `seq` of the log itself.
    last_seq: u64,
    extra: Vec<OutputEntry>,
    id: u64,
}

/// One command's feed, shared by its followers here; its task ends when the last one leaves.
struct Feed {
    batches: broadcast::Sender<Arc<[OutputEntry]>>,
    window: Arc<Mutex<Window>>,
    end: watch::Sender<Option<Arc<End>>>,
    task: tokio::task::AbortHandle,
}

/// The latest batches of a command's log, from just after `start`.
#[derive(Default)]
struct Window {
    /// The `seq` the window follows on from: everything after it is here or still to come.
    start: u64,
    batches: std::collections::VecDeque<Arc<[OutputEntry]>>,
    bytes: usize,
}

impl Window {
    /// Takes `batch` in (and hands it on), dropping the oldest past `WINDOW_BYTES`.
    fn push(&mut self, batch: Arc<[OutputEntry]>, followers: &broadcast::Sender<Arc<[OutputEntry]>>) {
        self.bytes += batch_bytes(&batch);
        self.batches.push_back(batch.clone());
        while self.bytes > WINDOW_BYTES && self.batches.len() > 1 {
            if let Some(oldest) = self.batches.pop_front() {
                self.bytes -= batch_bytes(&oldest);
                self.start = oldest.last().map_or(self.start, |e| e.seq);
            }
        }
        // Sent while the window is held: a follower that read the window before this batch was
        // in it subscribed before, and gets it from the broadcast.
        let _ = followers.send(batch);
    }

    /// What is here after `after`, if the window reaches back that far.
    fn after(&self, after: u64) -> Option<Vec<OutputEntry>> {
        (after >= self.start)
            .then(|| self.batches.iter().flat_map(|b| b.iter()).filter(|e| e.seq > after).cloned().collect())
    }
}

fn batch_bytes(batch: &[OutputEntry]) -> usize {
    batch.iter().map(|e| if let EntryKind::Data(data) = &e.kind { data.len() + 32 } else { 32 }).sum()
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Feed {
    fn start(id: Uuid, reader: Reader) -> Arc<Self> {
        let (batches, _) = broadcast::channel(BROADCAST_BATCHES);
        let (end, _) = watch::channel(None);
        let window = Arc::new(Mutex::new(Window::default()));
        let (feed_batches, feed_end, feed_window) = (batches.clone(), end.clone(), window.clone());
        let task = tokio::spawn(async move {
            let changes = reader.log.changes(id);
            let mut last = 0;
            loop {
                let woken = changes.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                match feed_once(id, &reader, &mut last, &feed_window, &feed_batches).await {
                    Ok(Some(ended)) => {
                        feed_end.send_replace(Some(Arc::new(ended)));
                        return;
                    }
                    Ok(None) => {}
                    Err(error) => tracing::warn!(%error, command.id = %id, "a feed could not read the log; again soon"),
                }
                let _ = tokio::time::timeout(FOLLOW_POLL, woken).await;
            }
        });
        Arc::new(Self { batches, window, end, task: task.abort_handle() })
    }
}

/// Takes in what came after `last`; once nothing did and the command has ended, its end.
async fn feed_once(
    id: Uuid,
    reader: &Reader,
    last: &mut u64,
    window: &Mutex<Window>,
    batches: &broadcast::Sender<Arc<[OutputEntry]>>,
) -> Result<Option<End>, DomainError> {
    let drain = async |from: &mut u64| -> Result<(), DomainError> {
        loop {
            let page = reader.after(id, *from).await?;
            let Some(newest) = page.last() else { return Ok(()) };
            *from = newest.seq;
            window.lock().unwrap_or_else(|p| p.into_inner()).push(page.into(), batches);
        }
    };
    let mut from = *last;
    drain(&mut from).await?;
    *last = from;
    let command = reader.command(id).await?;
    if !command.status.is_final() {
        return Ok(None);
    }
    // Ended: entries stored before the status changed may have come since the read above.
    drain(&mut from).await?;
    *last = from;
    // The end, once: how far each stream's log reaches, page by page, then the tails.
    let mut ends = LogEnds::default();
    let mut seq = 0;
    loop {
        let page = reader.after(id, seq).await?;
        let Some(newest) = page.last() else { break };
        seq = newest.seq;
        page.iter().for_each(|entry| ends.add(entry));
    }
    let tails = reader.read(reader.log.tails(id)).await?;
    let extra = ends.tail_entries(&tails);
    let id = extra.last().map_or(ends.last_seq, |e| e.seq) + 1;
    Ok(Some(End { command, last_seq: ends.last_seq, extra, id }))
}

struct Follower {
    batches: broadcast::Receiver<Arc<[OutputEntry]>>,
    end: watch::Receiver<Option<Arc<End>>>,
    feed: Arc<Feed>,
    _seat: Seat,
    reader: Reader,
    id: Uuid,
    after: u64,
    pending: std::vec::IntoIter<OutputEntry>,
    /// Whether the log has nothing after `after` that the broadcast will not bring.
    caught_up: bool,
    done: bool,
}

impl Follower {
    async fn next(&mut self) -> Option<Result<Followed, DomainError>> {
        if self.done {
            return None;
        }
        loop {
            if let Some(entry) = self.pending.next() {
                if entry.seq <= self.after {
                    continue;
                }
                self.after = entry.seq;
                return Some(Ok(Followed::Entry(entry)));
            }
            if !self.caught_up {
                let recent = self.feed.window.lock().unwrap_or_else(|p| p.into_inner()).after(self.after);
                if let Some(recent) = recent {
                    self.caught_up = true;
                    self.pending = recent.into_iter();
                    continue;
                }
                // Older than the window: from the log, a page at a time.
                match self.reader.after(self.id, self.after).await {
                    Ok(page) if page.is_empty() => self.caught_up = true,
                    Ok(page) => self.pending = page.into_iter(),
                    Err(error) => {
                        self.done = true;
                        return Some(Err(error));
                    }
                }
                continue;
            }
            let ended = self.end.borrow_and_update().clone();
            if let Some(end) = ended {
                if self.after < end.last_seq {
                    self.caught_up = false;
                    continue;
                }
                let unseen: Vec<_> = end.extra.iter().filter(|e| e.seq > self.after).cloned().collect();
                if !unseen.is_empty() {
                    self.pending = unseen.into_iter();
                    continue;
                }
                self.done = true;
                return (self.after < end.id)
                    .then(|| Ok(Followed::Exit { command: Box::new(end.command.clone()), id: end.id }));
            }
            tokio::select! {
                batch = self.batches.recv() => match batch {
                    Ok(batch) => {
                        let fresh: Vec<_> = batch.iter().filter(|e| e.seq > self.after).cloned().collect();
                        // A batch that does not follow on: what lies between is in the log.
                        if fresh.first().is_some_and(|first| first.seq != self.after + 1) {
                            self.caught_up = false;
                        } else {
                            self.pending = fresh.into_iter();
                        }
                    }
                    // Slower than the command: read what was missed from the log.
                    Err(broadcast::error::RecvError::Lagged(_)) => self.caught_up = false,
                    Err(broadcast::error::RecvError::Closed) => {
                        self.done = true;
                        return None;
                    }
                },
                _ = self.end.changed() => {}
            }
        }
    }
}
