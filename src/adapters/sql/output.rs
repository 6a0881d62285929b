//! `OutputLog` on SQL: one multi-row insert per batch; on Postgres a `NOTIFY rdev_output` with
//! the command's id after it wakes that command's followers on every replica (one `LISTEN`
//! connection per replica), on SQLite the process wakes its own.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock, Weak},
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use uuid::Uuid;

use super::{
    dialect::{Db, Dialect, Heard, Kind, On, Stmt, values_rows},
    errors::corrupt,
    values::Row,
};
use crate::{
    domain::{DomainError, EntryKind, OutputEntry, Stream, TailSnapshot},
    ports::OutputLog,
};

const CHANNEL: &str = "rdev_output";

pub(crate) struct SqlOutputLog<D: Dialect> {
    db: Db<D>,
    changes: Arc<Changes>,
    /// Postgres: the `LISTEN` of this replica, started by the first follower.
    listening: OnceLock<()>,
}

/// The wake-up of each command someone here follows (held by its followers, so a command no
/// one follows any more drops out).
#[derive(Default)]
struct Changes {
    of: Mutex<HashMap<Uuid, Weak<Notify>>>,
}

impl Changes {
    fn of(&self, command: Uuid) -> Arc<Notify> {
        let mut of = self.of.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(notify) = of.get(&command).and_then(Weak::upgrade) {
            return notify;
        }
        // Now and then, forget the commands no one follows.
        if of.len() >= 64 && of.len().is_power_of_two() {
            of.retain(|_, notify| notify.strong_count() > 0);
        }
        let notify = Arc::new(Notify::new());
        of.insert(command, Arc::downgrade(&notify));
        notify
    }

    fn wake(&self, command: Option<Uuid>) {
        let of = self.of.lock().unwrap_or_else(|p| p.into_inner());
        match command {
            Some(command) => of.get(&command).and_then(Weak::upgrade).into_iter().for_each(|n| n.notify_waiters()),
            None => of.values().filter_map(Weak::upgrade).for_each(|n| n.notify_waiters()),
        }
    }
}

impl<D: Dialect> SqlOutputLog<D> {
    pub(crate) fn new(db: Db<D>) -> Self {
        Self { db, changes: Arc::default(), listening: OnceLock::new() }
    }

    async fn wake_everyone(&self, command: Uuid) -> Result<(), DomainError> {
        if D::KIND == Kind::Postgres {
            Stmt::<D>::new("SELECT pg_notify($1, $2)")
                .value(CHANNEL)
                .value(command.to_string())
                .fetch_optional(&self.db)
                .await?;
        }
        self.changes.wake(Some(command));
        Ok(())
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn entry_from_row(row: &impl Row) -> Result<OutputEntry, DomainError> {
    let stream: String = row.get("stream")?;
    let kind = match row.int("gap_bytes")? {
        Some(bytes) => EntryKind::Gap { bytes: bytes.max(0) as u64 },
        None => EntryKind::Data(row.get::<Option<Vec<u8>>>("data")?.unwrap_or_default()),
    };
    Ok(OutputEntry {
        seq: row.required_int("seq")?.max(0) as u64,
        stream: Stream::parse(&stream).ok_or_else(|| corrupt("output stream", &stream))?,
        offset: row.required_int("byte_offset")?.max(0) as u64,
        kind,
    })
}

/// Entries of one statement at most, well below either database's parameter limit.
const ROWS_PER_INSERT: usize = 1000;

/// Stores entries, each of its command, a statement per thousand (on the pool, or in the
/// caller's transaction: commands run now store their last ones with their audit entries).
pub(super) async fn insert_entries<'a, D: Dialect>(
    on: impl Into<On<'a, D>>,
    entries: &[(Uuid, &OutputEntry)],
) -> Result<(), DomainError> {
    let mut on = on.into();
    for chunk in entries.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            // A batch written again (its first answer lost) is stored once.
            "INSERT INTO command_output (command_id, seq, stream, byte_offset, data, gap_bytes) VALUES {}
             ON CONFLICT (command_id, seq) DO NOTHING",
            values_rows::<D>(chunk.len(), 6)
        );
        let mut insert = Stmt::<D>::new(sql);
        for (command, entry) in chunk {
            let (data, gap) = match &entry.kind {
                EntryKind::Data(bytes) => (Some(bytes.clone()), None),
                EntryKind::Gap { bytes } => (None, Some(to_i64(*bytes))),
            };
            insert = insert
                .uuid(Some(*command))
                .value(to_i64(entry.seq))
                .value(entry.stream.as_str())
                .value(to_i64(entry.offset))
                .value(data)
                .value(gap);
        }
        insert.execute(on.reborrow()).await?;
    }
    Ok(())
}

#[async_trait]
impl<D: Dialect> OutputLog for SqlOutputLog<D> {
    async fn append(&self, command: Uuid, entries: &[OutputEntry]) -> Result<(), DomainError> {
        let entries: Vec<_> = entries.iter().map(|entry| (command, entry)).collect();
        insert_entries::<D>(&self.db, &entries).await?;
        self.wake_everyone(command).await
    }

    async fn after(&self, command: Uuid, after: u64, limit: u32) -> Result<Vec<OutputEntry>, DomainError> {
        Stmt::<D>::new(
            "SELECT seq, stream, byte_offset, data, gap_bytes FROM command_output
             WHERE command_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .uuid(Some(command))
        .value(to_i64(after))
        .value(i64::from(limit))
        .fetch_mapped(&self.db, entry_from_row)
        .await
    }

    async fn last_seq(&self, command: Uuid) -> Result<u64, DomainError> {
        let row = Stmt::<D>::new("SELECT MAX(seq) AS last FROM command_output WHERE command_id = $1")
            .uuid(Some(command))
            .fetch_one(&self.db)
            .await?;
        Ok(row.int("last")?.unwrap_or(0).max(0) as u64)
    }

    async fn save_tail(&self, command: Uuid, tail: &TailSnapshot) -> Result<(), DomainError> {
        Stmt::<D>::new(
            "INSERT INTO command_output_tail (command_id, stream, byte_offset, data) VALUES ($1, $2, $3, $4)
             ON CONFLICT (command_id, stream) DO UPDATE SET byte_offset = excluded.byte_offset, data = excluded.data",
        )
        .uuid(Some(command))
        .value(tail.stream.as_str())
        .value(to_i64(tail.offset))
        .value(tail.data.clone())
        .execute(&self.db)
        .await
        .map(drop)
    }

    async fn tails(&self, command: Uuid) -> Result<Vec<TailSnapshot>, DomainError> {
        Stmt::<D>::new(
            "SELECT stream, byte_offset, data FROM command_output_tail WHERE command_id = $1 ORDER BY stream",
        )
        .uuid(Some(command))
        .fetch_mapped(&self.db, |row| {
            let stream: String = row.get("stream")?;
            Ok(TailSnapshot {
                stream: Stream::parse(&stream).ok_or_else(|| corrupt("output stream", &stream))?,
                offset: row.required_int("byte_offset")?.max(0) as u64,
                data: row.get("data")?,
            })
        })
        .await
    }

    async fn announce(&self, command: Uuid) -> Result<(), DomainError> {
        self.wake_everyone(command).await
    }

    fn changes(&self, command: Uuid) -> Arc<Notify> {
        self.listening.get_or_init(|| {
            let changes = self.changes.clone();
            let heard: Heard = Arc::new(move |payload: Option<&str>| match payload {
                None => changes.wake(None),
                Some(payload) => {
                    if let Ok(command) = payload.parse() {
                        changes.wake(Some(command));
                    }
                }
            });
            D::listen_payloads(&self.db.pool, CHANNEL, heard);
        });
        self.changes.of(command)
    }

    async fn purge(&self, before: DateTime<Utc>) -> Result<u64, DomainError> {
        let ended = "SELECT id FROM commands WHERE finished_at < $1";
        let tails = format!("DELETE FROM command_output_tail WHERE command_id IN ({ended})");
        Stmt::<D>::new(tails).time(Some(before)).execute(&self.db).await?;
        Stmt::<D>::new(format!("DELETE FROM command_output WHERE command_id IN ({ended})"))
            .time(Some(before))
            .execute(&self.db)
            .await
    }
}
