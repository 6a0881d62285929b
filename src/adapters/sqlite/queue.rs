//! `CommandQueue` on SQLite: claims and recoveries run inside `BEGIN IMMEDIATE`, which holds the
//! database's single write lock, so two workers (or two processes on one file) cannot take the
//! same command. Enqueues in this process wake its workers directly.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Row, SqliteConnection, SqlitePool, sqlite::SqliteRow};
use tokio::sync::Notify;
use uuid::Uuid;

use super::{from_micros, micros, opt_from_micros, uuid_from_text};
use crate::{
    adapters::{
        db::{corrupt, db_error},
        queue_rows, rows,
    },
    domain::{Caller, Command, CommandEnd, CommandFilter, DomainError, OutboxEvent, Page, PageRequest},
    ports::{CancelEffect, CommandQueue},
};

const COLUMNS: &str = "id, project_id, command, workdir, env, timeout_secs, priority, status, attempts, max_attempts, \
     api_key_id, request_id, client_ip, exit_code, stdout, stderr, stdout_truncated, stderr_truncated, error, \
     cancel_requested, created_at, started_at, finished_at";

pub struct SqliteCommandQueue {
    pool: SqlitePool,
    work: Arc<Notify>,
}

impl SqliteCommandQueue {
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool, work: Arc::new(Notify::new()) }
    }
}

fn command_from_row(row: &SqliteRow) -> Result<Command, DomainError> {
    let get = |e| db_error(e);
    let env: String = row.try_get("env").map_err(get)?;
    let api_key_id: Option<String> = row.try_get("api_key_id").map_err(get)?;
    Ok(Command {
        id: uuid_from_text(row.try_get("id").map_err(get)?)?,
        project_id: queue_rows::project(row.try_get("project_id").map_err(get)?)?,
        command: row.try_get("command").map_err(get)?,
        workdir: row.try_get("workdir").map_err(get)?,
        env: serde_json::from_str(&env).map_err(|e| corrupt("env", e))?,
        timeout_secs: row.try_get::<i64, _>("timeout_secs").map_err(get)?.max(0) as u64,
        priority: row.try_get::<i64, _>("priority").map_err(get)?.clamp(0, 9) as u8,
        status: queue_rows::status(row.try_get("status").map_err(get)?)?,
        attempts: row.try_get::<i64, _>("attempts").map_err(get)?.max(0) as u32,
        max_attempts: row.try_get::<i64, _>("max_attempts").map_err(get)?.max(0) as u32,
        exit_code: row.try_get("exit_code").map_err(get)?,
        stdout: row.try_get("stdout").map_err(get)?,
        stderr: row.try_get("stderr").map_err(get)?,
        stdout_truncated: row.try_get("stdout_truncated").map_err(get)?,
        stderr_truncated: row.try_get("stderr_truncated").map_err(get)?,
        error: row.try_get("error").map_err(get)?,
        cancel_requested: row.try_get("cancel_requested").map_err(get)?,
        created_at: from_micros(row.try_get("created_at").map_err(get)?)?,
        started_at: opt_from_micros(row.try_get("started_at").map_err(get)?)?,
        finished_at: opt_from_micros(row.try_get("finished_at").map_err(get)?)?,
        caller: Caller {
            api_key_id: api_key_id.as_deref().map(uuid_from_text).transpose()?,
            request_id: row.try_get("request_id").map_err(get)?,
            client_ip: rows::ip_from_string(row.try_get("client_ip").map_err(get)?)?,
        },
    })
}

/// Puts the webhook event of each command that reached a final status into the outbox, in the
/// transaction that stored that status.
async fn publish_final(
    conn: &mut SqliteConnection,
    commands: impl IntoIterator<Item = &Command>,
) -> Result<(), DomainError> {
    for event in commands.into_iter().filter_map(OutboxEvent::for_command) {
        super::webhooks::publish(conn, &event).await?;
    }
    Ok(())
}

fn one(row: Option<SqliteRow>) -> Result<Option<Command>, DomainError> {
    row.as_ref().map(command_from_row).transpose()
}

#[async_trait]
impl CommandQueue for SqliteCommandQueue {
    async fn enqueue(&self, command: &Command) -> Result<(), DomainError> {
        sqlx::query(
            "INSERT INTO commands (id, project_id, command, workdir, env, timeout_secs, priority, status, max_attempts,
                                   api_key_id, request_id, client_ip, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued', ?8, ?9, ?10, ?11, ?12)",
        )
        .bind(command.id.to_string())
        .bind(command.project_id.as_str())
        .bind(&command.command)
        .bind(command.workdir.as_deref())
        .bind(serde_json::to_string(&command.env).unwrap_or_else(|_| "{}".into()))
        .bind(i64::try_from(command.timeout_secs).unwrap_or(i64::MAX))
        .bind(i64::from(command.priority))
        .bind(i64::from(command.max_attempts))
        .bind(command.caller.api_key_id.map(|id| id.to_string()))
        .bind(&command.caller.request_id)
        .bind(command.caller.client_ip.map(|ip| ip.to_string()))
        .bind(micros(command.created_at))
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        self.work.notify_waiters();
        Ok(())
    }

    async fn get(&self, id: Uuid) -> Result<Option<Command>, DomainError> {
        let sql = format!("SELECT {COLUMNS} FROM commands WHERE id = ?1");
        one(sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?)
    }

    async fn list(&self, filter: &CommandFilter, page: &PageRequest) -> Result<Page<Command>, DomainError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM commands
             WHERE (?1 IS NULL OR project_id = ?1) AND (?2 IS NULL OR status = ?2)
               AND (?3 IS NULL OR (created_at, id) < (SELECT created_at, id FROM commands WHERE id = ?3))
             ORDER BY created_at DESC, id DESC LIMIT ?4"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(filter.project_id.as_ref().map(|p| p.as_str()))
            .bind(filter.status.map(|s| s.as_str()))
            .bind(page.after.map(|id| id.to_string()))
            .bind(page.fetch_limit())
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        let commands = rows.iter().map(command_from_row).collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_rows(commands, page, |c| c.id))
    }

    #[tracing::instrument(name = "db commands.claim", skip_all, fields(db.system = "sqlite"))]
    async fn claim(&self, worker: &str, lease_until: DateTime<Utc>) -> Result<Option<Command>, DomainError> {
        let sql = format!(
            "UPDATE commands SET status = 'running', claimed_by = ?1, lease_until = ?2
             WHERE id = (SELECT id FROM commands WHERE status = 'queued' ORDER BY priority DESC, seq LIMIT 1)
             RETURNING {COLUMNS}"
        );
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(worker)
            .bind(micros(lease_until))
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        one(row)
    }

    async fn start(&self, id: Uuid, worker: &str, at: DateTime<Utc>) -> Result<bool, DomainError> {
        let done = sqlx::query(
            "UPDATE commands SET started_at = ?3, attempts = attempts + 1
             WHERE id = ?1 AND claimed_by = ?2 AND status = 'running'",
        )
        .bind(id.to_string())
        .bind(worker)
        .bind(micros(at))
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn renew(&self, id: Uuid, worker: &str, lease_until: DateTime<Utc>) -> Result<Option<bool>, DomainError> {
        let row = sqlx::query(
            "UPDATE commands SET lease_until = ?3 WHERE id = ?1 AND claimed_by = ?2 AND status = 'running'
             RETURNING cancel_requested",
        )
        .bind(id.to_string())
        .bind(worker)
        .bind(micros(lease_until))
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.map(|row| row.try_get("cancel_requested").map_err(db_error)).transpose()
    }

    async fn finish(
        &self,
        id: Uuid,
        worker: &str,
        end: &CommandEnd,
        at: DateTime<Utc>,
    ) -> Result<Option<Command>, DomainError> {
        let end = queue_rows::Ending::of(end);
        let sql = format!(
            "UPDATE commands SET status = ?3, exit_code = ?4, stdout = ?5, stderr = ?6, stdout_truncated = ?7,
                    stderr_truncated = ?8, error = ?9, finished_at = ?10, claimed_by = NULL, lease_until = NULL
             WHERE id = ?1 AND claimed_by = ?2 AND status = 'running'
             RETURNING {COLUMNS}"
        );
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .bind(worker)
            .bind(end.status.as_str())
            .bind(end.exit_code)
            .bind(end.stdout)
            .bind(end.stderr)
            .bind(end.stdout_truncated)
            .bind(end.stderr_truncated)
            .bind(end.error)
            .bind(micros(at))
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
        let finished = one(row)?;
        publish_final(&mut tx, finished.iter()).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(finished)
    }

    async fn release(&self, id: Uuid, worker: &str) -> Result<(), DomainError> {
        sqlx::query(
            "UPDATE commands SET status = 'queued', claimed_by = NULL, lease_until = NULL
             WHERE id = ?1 AND claimed_by = ?2 AND status = 'running' AND started_at IS NULL",
        )
        .bind(id.to_string())
        .bind(worker)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        self.work.notify_waiters();
        Ok(())
    }

    async fn cancel(&self, id: Uuid, at: DateTime<Utc>) -> Result<Option<(Command, CancelEffect)>, DomainError> {
        let queued = format!(
            "UPDATE commands SET status = 'cancelled', finished_at = ?2 WHERE id = ?1 AND status = 'queued' RETURNING {COLUMNS}"
        );
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
        let row = sqlx::query(sqlx::AssertSqlSafe(queued))
            .bind(id.to_string())
            .bind(micros(at))
            .fetch_optional(&mut *tx)
            .await;
        if let Some(cancelled) = one(row.map_err(db_error)?)? {
            publish_final(&mut tx, [&cancelled]).await?;
            tx.commit().await.map_err(db_error)?;
            return Ok(Some((cancelled, CancelEffect::Cancelled)));
        }
        tx.rollback().await.map_err(db_error)?;
        let running = format!(
            "UPDATE commands SET cancel_requested = 1 WHERE id = ?1 AND status = 'running' RETURNING {COLUMNS}"
        );
        if let Some(row) = sqlx::query(sqlx::AssertSqlSafe(running))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?
        {
            return Ok(one(Some(row))?.map(|c| (c, CancelEffect::Requested)));
        }
        let effect =
            |c: &Command| if c.status.is_final() { CancelEffect::AlreadyFinished } else { CancelEffect::Requested };
        Ok(self.get(id).await?.map(|c| {
            let e = effect(&c);
            (c, e)
        }))
    }

    async fn recover_expired(&self, now: DateTime<Utc>) -> Result<Vec<Command>, DomainError> {
        let now = micros(now);
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
        sqlx::query(
            "UPDATE commands SET status = 'queued', claimed_by = NULL, lease_until = NULL
             WHERE status = 'running' AND lease_until < ?1 AND started_at IS NULL",
        )
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        sqlx::query(
            "UPDATE commands SET status = 'queued', claimed_by = NULL, lease_until = NULL, started_at = NULL
             WHERE status = 'running' AND lease_until < ?1 AND attempts < max_attempts AND NOT cancel_requested",
        )
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let sql = format!(
            "UPDATE commands SET status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'failed' END,
                    error = 'worker lost', finished_at = ?1, claimed_by = NULL, lease_until = NULL
             WHERE status = 'running' AND lease_until < ?1
             RETURNING {COLUMNS}"
        );
        let lost = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now).fetch_all(&mut *tx).await.map_err(db_error)?;
        let lost = lost.iter().map(command_from_row).collect::<Result<Vec<_>, _>>()?;
        publish_final(&mut tx, lost.iter()).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(lost)
    }

    async fn depth(&self) -> Result<Vec<(u8, u64)>, DomainError> {
        let rows =
            sqlx::query("SELECT priority, COUNT(*) AS waiting FROM commands WHERE status = 'queued' GROUP BY priority")
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                let priority: i64 = row.try_get("priority").map_err(db_error)?;
                let waiting: i64 = row.try_get("waiting").map_err(db_error)?;
                Ok((priority.clamp(0, 9) as u8, waiting.max(0) as u64))
            })
            .collect()
    }

    async fn wait_for_work(&self) {
        self.work.notified().await;
    }
}
