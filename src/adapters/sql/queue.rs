//! `CommandQueue` on SQL, shared by every replica.
//!
//! Claims and recoveries are atomic across replicas: on Postgres a claim takes its row with
//! `FOR UPDATE SKIP LOCKED` (replicas never take the same command, nor wait on each other), and
//! `LISTEN rdev_commands` (fed by an insert trigger) wakes one idle worker a replica per
//! command; on SQLite they run in a write transaction (`BEGIN IMMEDIATE`, the database's single
//! write lock), and an enqueue in this process wakes one of its workers directly.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use tokio::sync::{Notify, OnceCell};
use uuid::Uuid;

use super::{
    audit::insert_entry,
    command_rows::{COLUMNS, CommandRow, command_from_row, omitted_columns, storable, upsert_commands},
    dialect::{Db, Dialect, Kind, Stmt, Tx, begin, commit, rollback},
    outbox::publish,
    values::Row,
};
use crate::{
    domain::{AuditEntry, Command, CommandEnd, CommandFilter, DomainError, OutboxEvent, Page, PageRequest},
    ports::{CancelEffect, CommandQueue, Recovered, RecoveryAudit},
};

pub(crate) struct SqlCommandQueue<D: Dialect> {
    db: Db<D>,
    work: Arc<Notify>,
    /// Postgres: the one LISTEN connection of this replica, started by the first worker that waits.
    listener: OnceCell<()>,
}

impl<D: Dialect> SqlCommandQueue<D> {
    pub(crate) fn new(db: Db<D>) -> Self {
        Self { db, work: Arc::new(Notify::new()), listener: OnceCell::new() }
    }
}

/// Puts the webhook event of each command that reached a final status into the outbox, in the
/// transaction that stored that status.
async fn publish_final<'c, D: Dialect>(
    tx: &mut Tx<D>,
    commands: impl IntoIterator<Item = &'c Command>,
) -> Result<(), DomainError> {
    for event in commands.into_iter().filter_map(OutboxEvent::for_command) {
        publish(tx, &event).await?;
    }
    Ok(())
}

fn one(row: Option<impl Row>) -> Result<Option<Command>, DomainError> {
    row.as_ref().map(command_from_row).transpose()
}

#[async_trait]
impl<D: Dialect> CommandQueue for SqlCommandQueue<D> {
    async fn enqueue(&self, command: &Command) -> Result<(), DomainError> {
        let row = CommandRow { command, claimed_by: None, lease_until: None };
        upsert_commands::<D>(&self.db, &[row]).await?;
        // One command: one worker here (and on Postgres, through the insert's NOTIFY, one on
        // each replica; the direct wake keeps this replica prompt while LISTEN reconnects).
        self.work.notify_one();
        Ok(())
    }

    async fn store_now(&self, command: &Command, worker: &str, lease_until: DateTime<Utc>) -> Result<(), DomainError> {
        let row = CommandRow { command, claimed_by: Some(worker), lease_until: Some(lease_until) };
        upsert_commands::<D>(&self.db, &[row]).await
    }

    async fn get(&self, id: Uuid) -> Result<Option<Command>, DomainError> {
        let sql = format!("SELECT {COLUMNS} FROM commands WHERE id = $1");
        one(Stmt::<D>::new(sql).uuid(Some(id)).fetch_optional(&self.db).await?)
    }

    async fn list(&self, filter: &CommandFilter, page: &PageRequest) -> Result<Page<Command>, DomainError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM commands
             WHERE ($1 IS NULL OR project_id = $1) AND ($2 IS NULL OR status = $2)
               AND ($3 IS NULL OR (created_at, id) < (SELECT created_at, id FROM commands WHERE id = $3))
               AND ($5 IS NULL OR session_id IS NULL OR api_key_id = $5)
             ORDER BY created_at DESC, id DESC LIMIT $4"
        );
        let commands = Stmt::<D>::new(sql)
            .value(filter.project_id.as_ref().map(|p| p.as_str().to_owned()))
            .value(filter.status.map(|s| s.as_str()))
            .page(page)
            .uuid(filter.reader.key())
            .fetch_mapped(&self.db, command_from_row)
            .await?;
        Ok(Page::from_rows(commands, page, |c| c.id))
    }

    #[tracing::instrument(name = "db commands.claim", skip_all, fields(db.system = D::SYSTEM))]
    async fn claim(
        &self,
        worker: &str,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
        avoid: &[Uuid],
    ) -> Result<Option<Command>, DomainError> {
        let lock = if D::KIND == Kind::Postgres { " FOR UPDATE SKIP LOCKED" } else { "" };
        let claim = |avoiding: &str| {
            Stmt::<D>::new(format!(
                "UPDATE commands SET status = 'running', claimed_by = $1, lease_until = $2
                 WHERE id = (SELECT id FROM commands WHERE status = 'queued'{avoiding}
                     AND NOT EXISTS (SELECT 1 FROM api_keys k WHERE k.id = commands.api_key_id
                         AND (k.revoked_at IS NOT NULL OR k.expires_at <= $3))
                     ORDER BY priority DESC, seq LIMIT 1{lock})
                 RETURNING {COLUMNS}"
            ))
            .value(worker.to_owned())
            .time(Some(lease_until))
            .time(Some(now))
        };
        // Uuids print as hex and hyphens only, so they are safe inline; their number is at most
        // the workers of one replica.
        let avoiding = match avoid {
            [] => None,
            keys => {
                let listed: Vec<String> = keys.iter().map(|id| format!("'{id}'")).collect();
                Some(format!(" AND (api_key_id IS NULL OR api_key_id NOT IN ({}))", listed.join(", ")))
            }
        };
        // When no other key's command waits, the avoided keys may have the worker.
        match D::KIND {
            Kind::Postgres => {
                if let Some(avoiding) = &avoiding
                    && let Some(row) = claim(avoiding).fetch_optional(&self.db).await?
                {
                    return one(Some(row));
                }
                one(claim("").fetch_optional(&self.db).await?)
            }
            Kind::Sqlite => {
                let mut tx = begin(&self.db).await?;
                let mut row = match &avoiding {
                    Some(avoiding) => claim(avoiding).fetch_optional(&mut tx).await?,
                    None => None,
                };
                if row.is_none() {
                    row = claim("").fetch_optional(&mut tx).await?;
                }
                commit(tx).await?;
                one(row)
            }
        }
    }

    async fn cancel_of_unusable_keys(&self, now: DateTime<Utc>) -> Result<u64, DomainError> {
        let unusable = "SELECT id FROM api_keys WHERE revoked_at IS NOT NULL OR expires_at <= $1";
        let why = "(SELECT CASE WHEN k.revoked_at IS NOT NULL THEN 'API key has been revoked'
                     ELSE 'API key has expired' END FROM api_keys k WHERE k.id = commands.api_key_id)";
        let queued = format!(
            "UPDATE commands SET status = 'cancelled', finished_at = $1, stdin = NULL, error = {why}
             WHERE status = 'queued' AND api_key_id IN ({unusable}) RETURNING {COLUMNS}"
        );
        let running = format!(
            "UPDATE commands SET cancel_requested = TRUE
             WHERE status = 'running' AND origin = 'queue' AND NOT cancel_requested AND api_key_id IN ({unusable})"
        );
        let mut tx = begin(&self.db).await?;
        let rows = Stmt::<D>::new(queued).time(Some(now)).fetch_all(&mut tx).await?;
        let cancelled = rows.iter().map(command_from_row).collect::<Result<Vec<_>, _>>()?;
        publish_final(&mut tx, &cancelled).await?;
        let requested = Stmt::<D>::new(running).time(Some(now)).execute(&mut tx).await?;
        commit(tx).await?;
        Ok(cancelled.len() as u64 + requested)
    }

    async fn start(&self, id: Uuid, worker: &str, at: DateTime<Utc>) -> Result<bool, DomainError> {
        let sql = "UPDATE commands SET started_at = $3, attempts = attempts + 1
                   WHERE id = $1 AND claimed_by = $2 AND status = 'running'";
        let done = Stmt::<D>::new(sql).uuid(Some(id)).value(worker.to_owned()).time(Some(at)).execute(&self.db).await?;
        Ok(done == 1)
    }

    async fn renew(&self, id: Uuid, worker: &str, lease_until: DateTime<Utc>) -> Result<Option<bool>, DomainError> {
        let sql = "UPDATE commands SET lease_until = $3 WHERE id = $1 AND claimed_by = $2 AND status = 'running'
                   RETURNING cancel_requested";
        let row = Stmt::<D>::new(sql)
            .uuid(Some(id))
            .value(worker.to_owned())
            .time(Some(lease_until))
            .fetch_optional(&self.db)
            .await?;
        row.map(|row| row.get("cancel_requested")).transpose()
    }

    async fn finish(
        &self,
        id: Uuid,
        worker: &str,
        end: &CommandEnd,
        at: DateTime<Utc>,
        entry: &AuditEntry,
    ) -> Result<Option<Command>, DomainError> {
        let (exit_code, stdout, stderr, stdout_truncated, stderr_truncated, error) = match end {
            CommandEnd::Ran(outcome) => (
                Some(outcome.exit_code),
                storable(Some(&outcome.stdout)),
                storable(Some(&outcome.stderr)),
                outcome.stdout_truncated,
                outcome.stderr_truncated,
                None,
            ),
            CommandEnd::Cancelled => (None, None, None, false, false, None),
            CommandEnd::Stopped(message) | CommandEnd::Error(message) => {
                (None, None, None, false, false, Some(message.clone()))
            }
        };
        let ran = match end {
            CommandEnd::Ran(outcome) => Some(outcome),
            _ => None,
        };
        let (stdout_offset, stdout_bytes) = omitted_columns(ran.and_then(|o| o.stdout_omitted));
        let (stderr_offset, stderr_bytes) = omitted_columns(ran.and_then(|o| o.stderr_omitted));
        let sql = format!(
            "UPDATE commands SET status = $3, exit_code = $4, stdout = $5, stderr = $6, stdout_truncated = $7,
                    stderr_truncated = $8, error = $9, finished_at = $10, claimed_by = NULL, lease_until = NULL,
                    stdout_omitted_offset = $11, stdout_omitted_bytes = $12, stderr_omitted_offset = $13,
                    stderr_omitted_bytes = $14, stdin = NULL
             WHERE id = $1 AND claimed_by = $2 AND status = 'running'
             RETURNING {COLUMNS}"
        );
        let mut tx = begin(&self.db).await?;
        let row = Stmt::<D>::new(sql)
            .uuid(Some(id))
            .value(worker.to_owned())
            .value(end.status().as_str())
            .value(exit_code)
            .value(stdout)
            .value(stderr)
            .value(stdout_truncated)
            .value(stderr_truncated)
            .value(error)
            .time(Some(at))
            .value(stdout_offset)
            .value(stdout_bytes)
            .value(stderr_offset)
            .value(stderr_bytes)
            .fetch_optional(&mut tx)
            .await?;
        let finished = one(row)?;
        insert_entry(&mut tx, entry).await?;
        publish_final(&mut tx, finished.iter()).await?;
        commit(tx).await?;
        Ok(finished)
    }

    async fn release(&self, id: Uuid, worker: &str) -> Result<(), DomainError> {
        let sql = "UPDATE commands SET status = 'queued', claimed_by = NULL, lease_until = NULL
                   WHERE id = $1 AND claimed_by = $2 AND status = 'running' AND started_at IS NULL";
        Stmt::<D>::new(sql).uuid(Some(id)).value(worker.to_owned()).execute(&self.db).await?;
        self.work.notify_one();
        Ok(())
    }

    async fn cancel(&self, id: Uuid, at: DateTime<Utc>) -> Result<Option<(Command, CancelEffect)>, DomainError> {
        let queued = format!(
            "UPDATE commands SET status = 'cancelled', finished_at = $2, stdin = NULL WHERE id = $1 AND status = 'queued'
             RETURNING {COLUMNS}"
        );
        let mut tx = begin(&self.db).await?;
        if let Some(cancelled) =
            one(Stmt::<D>::new(queued).uuid(Some(id)).time(Some(at)).fetch_optional(&mut tx).await?)?
        {
            publish_final(&mut tx, [&cancelled]).await?;
            commit(tx).await?;
            return Ok(Some((cancelled, CancelEffect::Cancelled)));
        }
        rollback(tx).await?;
        let running = format!(
            "UPDATE commands SET cancel_requested = TRUE WHERE id = $1 AND status = 'running' RETURNING {COLUMNS}"
        );
        if let Some(requested) = one(Stmt::<D>::new(running).uuid(Some(id)).fetch_optional(&self.db).await?)? {
            return Ok(Some((requested, CancelEffect::Requested)));
        }
        Ok(self.get(id).await?.map(|command| (command, CancelEffect::Unchanged)))
    }

    async fn recover_expired(
        &self,
        now: DateTime<Utc>,
        audit: RecoveryAudit<'_>,
    ) -> Result<Vec<Recovered>, DomainError> {
        let mut tx = begin(&self.db).await?;
        // Claimed but never started: nothing ran, so it simply goes back.
        Stmt::<D>::new(
            "UPDATE commands SET status = 'queued', claimed_by = NULL, lease_until = NULL
             WHERE status = 'running' AND lease_until < $1 AND started_at IS NULL",
        )
        .time(Some(now))
        .execute(&mut tx)
        .await?;
        // Started, and the client allowed another attempt.
        let retried = Stmt::<D>::new(format!(
            "UPDATE commands SET status = 'queued', claimed_by = NULL, lease_until = NULL, started_at = NULL
             WHERE status = 'running' AND lease_until < $1 AND attempts < max_attempts AND NOT cancel_requested
             RETURNING {COLUMNS}"
        ))
        .time(Some(now))
        .fetch_mapped(&mut tx, command_from_row)
        .await?;
        // Started and not to be repeated: shell commands are not idempotent.
        let lost = Stmt::<D>::new(format!(
            "UPDATE commands SET status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'failed' END,
                    error = 'worker lost', finished_at = $1, claimed_by = NULL, lease_until = NULL, stdin = NULL
             WHERE status = 'running' AND lease_until < $1
             RETURNING {COLUMNS}"
        ))
        .time(Some(now))
        .fetch_mapped(&mut tx, command_from_row)
        .await?;
        publish_final(&mut tx, lost.iter()).await?;
        let recovered: Vec<Recovered> =
            retried.into_iter().map(Recovered::Retried).chain(lost.into_iter().map(Recovered::Lost)).collect();
        for one in &recovered {
            insert_entry(&mut tx, &audit(one)).await?;
        }
        commit(tx).await?;
        Ok(recovered)
    }

    async fn active_of_key(&self, key: Uuid) -> Result<u64, DomainError> {
        let sql = "SELECT COUNT(*) AS active FROM commands WHERE api_key_id = $1 AND status IN ('queued', 'running')";
        let rows = Stmt::<D>::new(sql).uuid(Some(key)).fetch_mapped(&self.db, |row| row.required_int("active")).await?;
        Ok(rows.first().copied().unwrap_or(0).max(0) as u64)
    }

    async fn depth(&self) -> Result<Vec<(u8, u64)>, DomainError> {
        let sql = "SELECT priority, COUNT(*) AS waiting FROM commands WHERE status = 'queued' GROUP BY priority";
        Stmt::<D>::new(sql)
            .fetch_mapped(&self.db, |row| {
                Ok((row.required_int("priority")?.clamp(0, 9) as u8, row.required_int("waiting")?.max(0) as u64))
            })
            .await
    }

    async fn wait_for_work(&self) {
        // Postgres: every replica hears every enqueue. SQLite: `enqueue` wakes this process.
        self.listener.get_or_init(|| async { D::listen(&self.db.pool, "rdev_commands", self.work.clone()) }).await;
        self.work.notified().await;
    }
}
