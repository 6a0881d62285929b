//! `CommandQueue` on Postgres: `FOR UPDATE SKIP LOCKED` claims, so replicas never take the same
//! command and never wait on each other; `LISTEN rdev_commands` (fed by an insert trigger) wakes
//! idle workers.

use std::{collections::BTreeMap, sync::Arc};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Row, postgres::PgRow};
use tokio::sync::{Notify, OnceCell};
use uuid::Uuid;

use crate::{
    adapters::{db::db_error, queue_rows, rows},
    domain::{Caller, Command, CommandEnd, CommandFilter, DomainError, OutboxEvent, Page, PageRequest},
    ports::{CancelEffect, CommandQueue},
};

const COLUMNS: &str = "id, project_id, command, workdir, env, timeout_secs, priority, status, attempts, max_attempts, \
     api_key_id, request_id, client_ip, exit_code, stdout, stderr, stdout_truncated, stderr_truncated, error, \
     cancel_requested, created_at, started_at, finished_at";

pub struct PgCommandQueue {
    pool: PgPool,
    work: Arc<Notify>,
    listener: OnceCell<()>,
}

impl PgCommandQueue {
    pub fn new(pool: PgPool) -> Self {
        Self { pool, work: Arc::new(Notify::new()), listener: OnceCell::new() }
    }

    /// One LISTEN connection per replica, started by the first worker that waits.
    async fn listen(&self) {
        let pool = self.pool.clone();
        let work = self.work.clone();
        tokio::spawn(async move {
            loop {
                match sqlx::postgres::PgListener::connect_with(&pool).await {
                    Ok(mut listener) => {
                        if listener.listen("rdev_commands").await.is_ok() {
                            while listener.recv().await.is_ok() {
                                work.notify_waiters();
                            }
                        }
                    }
                    Err(error) => tracing::warn!(%error, "cannot LISTEN for new commands; polling only"),
                }
                // Reconnect; workers poll meanwhile, so nothing waits on this.
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
    }
}

fn command_from_row(row: &PgRow) -> Result<Command, DomainError> {
    let get = |e| db_error(e);
    let env: serde_json::Value = row.try_get("env").map_err(get)?;
    Ok(Command {
        id: row.try_get("id").map_err(get)?,
        project_id: queue_rows::project(row.try_get("project_id").map_err(get)?)?,
        command: row.try_get("command").map_err(get)?,
        workdir: row.try_get("workdir").map_err(get)?,
        env: serde_json::from_value::<BTreeMap<String, String>>(env)
            .map_err(|e| crate::adapters::db::corrupt("env", e))?,
        timeout_secs: row.try_get::<i32, _>("timeout_secs").map_err(get)?.max(0) as u64,
        priority: row.try_get::<i16, _>("priority").map_err(get)?.clamp(0, 9) as u8,
        status: queue_rows::status(row.try_get("status").map_err(get)?)?,
        attempts: row.try_get::<i32, _>("attempts").map_err(get)?.max(0) as u32,
        max_attempts: row.try_get::<i32, _>("max_attempts").map_err(get)?.max(0) as u32,
        exit_code: row.try_get("exit_code").map_err(get)?,
        stdout: row.try_get("stdout").map_err(get)?,
        stderr: row.try_get("stderr").map_err(get)?,
        stdout_truncated: row.try_get("stdout_truncated").map_err(get)?,
        stderr_truncated: row.try_get("stderr_truncated").map_err(get)?,
        error: row.try_get("error").map_err(get)?,
        cancel_requested: row.try_get("cancel_requested").map_err(get)?,
        created_at: row.try_get("created_at").map_err(get)?,
        started_at: row.try_get("started_at").map_err(get)?,
        finished_at: row.try_get("finished_at").map_err(get)?,
        caller: Caller {
            api_key_id: row.try_get("api_key_id").map_err(get)?,
            request_id: row.try_get("request_id").map_err(get)?,
            client_ip: rows::ip_from_string(row.try_get("client_ip").map_err(get)?)?,
        },
    })
}

/// Puts the webhook event of each command that reached a final status into the outbox, in the
/// transaction that stored that status.
async fn publish_final(
    conn: &mut PgConnection,
    commands: impl IntoIterator<Item = &Command>,
) -> Result<(), DomainError> {
    for event in commands.into_iter().filter_map(OutboxEvent::for_command) {
        super::webhooks::publish(conn, &event).await?;
    }
    Ok(())
}

fn one(row: Option<PgRow>) -> Result<Option<Command>, DomainError> {
    row.as_ref().map(command_from_row).transpose()
}

#[async_trait]
impl CommandQueue for PgCommandQueue {
    async fn enqueue(&self, command: &Command) -> Result<(), DomainError> {
        sqlx::query(
            "INSERT INTO commands (id, project_id, command, workdir, env, timeout_secs, priority, status, max_attempts,
                                   api_key_id, request_id, client_ip, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', $8, $9, $10, $11, $12)",
        )
        .bind(command.id)
        .bind(command.project_id.as_str())
        .bind(&command.command)
        .bind(command.workdir.as_deref())
        .bind(serde_json::to_value(&command.env).unwrap_or_default())
        .bind(i32::try_from(command.timeout_secs).unwrap_or(i32::MAX))
        .bind(i16::from(command.priority))
        .bind(i32::try_from(command.max_attempts).unwrap_or(1))
        .bind(command.caller.api_key_id)
        .bind(&command.caller.request_id)
        .bind(command.caller.client_ip.map(|ip| ip.to_string()))
        .bind(command.created_at)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn get(&self, id: Uuid) -> Result<Option<Command>, DomainError> {
        let sql = format!("SELECT {COLUMNS} FROM commands WHERE id = $1");
        one(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(&self.pool).await.map_err(db_error)?)
    }

    async fn list(&self, filter: &CommandFilter, page: &PageRequest) -> Result<Page<Command>, DomainError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM commands
             WHERE ($1::text IS NULL OR project_id = $1) AND ($2::text IS NULL OR status = $2)
               AND ($3::uuid IS NULL OR (created_at, id) < (SELECT created_at, id FROM commands WHERE id = $3))
             ORDER BY created_at DESC, id DESC LIMIT $4"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(filter.project_id.as_ref().map(|p| p.as_str()))
            .bind(filter.status.map(|s| s.as_str()))
            .bind(page.after)
            .bind(page.fetch_limit())
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        let commands = rows.iter().map(command_from_row).collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_rows(commands, page, |c| c.id))
    }

    #[tracing::instrument(name = "db commands.claim", skip_all, fields(db.system = "postgresql"))]
    async fn claim(&self, worker: &str, lease_until: DateTime<Utc>) -> Result<Option<Command>, DomainError> {
        let sql = format!(
            "UPDATE commands SET status = 'running', claimed_by = $1, lease_until = $2
             WHERE id = (SELECT id FROM commands WHERE status = 'queued' ORDER BY priority DESC, seq
                         LIMIT 1 FOR UPDATE SKIP LOCKED)
             RETURNING {COLUMNS}"
        );
        one(sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(worker)
            .bind(lease_until)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?)
    }

    async fn start(&self, id: Uuid, worker: &str, at: DateTime<Utc>) -> Result<bool, DomainError> {
        let done = sqlx::query(
            "UPDATE commands SET started_at = $3, attempts = attempts + 1
             WHERE id = $1 AND claimed_by = $2 AND status = 'running'",
        )
        .bind(id)
        .bind(worker)
        .bind(at)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn renew(&self, id: Uuid, worker: &str, lease_until: DateTime<Utc>) -> Result<Option<bool>, DomainError> {
        let row = sqlx::query(
            "UPDATE commands SET lease_until = $3 WHERE id = $1 AND claimed_by = $2 AND status = 'running'
             RETURNING cancel_requested",
        )
        .bind(id)
        .bind(worker)
        .bind(lease_until)
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
            "UPDATE commands SET status = $3, exit_code = $4, stdout = $5, stderr = $6, stdout_truncated = $7,
                    stderr_truncated = $8, error = $9, finished_at = $10, claimed_by = NULL, lease_until = NULL
             WHERE id = $1 AND claimed_by = $2 AND status = 'running'
             RETURNING {COLUMNS}"
        );
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(worker)
            .bind(end.status.as_str())
            .bind(end.exit_code)
            .bind(end.stdout)
            .bind(end.stderr)
            .bind(end.stdout_truncated)
            .bind(end.stderr_truncated)
            .bind(end.error)
            .bind(at)
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
             WHERE id = $1 AND claimed_by = $2 AND status = 'running' AND started_at IS NULL",
        )
        .bind(id)
        .bind(worker)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn cancel(&self, id: Uuid, at: DateTime<Utc>) -> Result<Option<(Command, CancelEffect)>, DomainError> {
        let queued = format!(
            "UPDATE commands SET status = 'cancelled', finished_at = $2 WHERE id = $1 AND status = 'queued' RETURNING {COLUMNS}"
        );
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let row = sqlx::query(sqlx::AssertSqlSafe(queued)).bind(id).bind(at).fetch_optional(&mut *tx).await;
        if let Some(cancelled) = one(row.map_err(db_error)?)? {
            publish_final(&mut tx, [&cancelled]).await?;
            tx.commit().await.map_err(db_error)?;
            return Ok(Some((cancelled, CancelEffect::Cancelled)));
        }
        tx.rollback().await.map_err(db_error)?;
        let running = format!(
            "UPDATE commands SET cancel_requested = TRUE WHERE id = $1 AND status = 'running' RETURNING {COLUMNS}"
        );
        if let Some(row) =
            sqlx::query(sqlx::AssertSqlSafe(running)).bind(id).fetch_optional(&self.pool).await.map_err(db_error)?
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
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        // Claimed but never started: nothing ran, so it simply goes back.
        sqlx::query(
            "UPDATE commands SET status = 'queued', claimed_by = NULL, lease_until = NULL
             WHERE status = 'running' AND lease_until < $1 AND started_at IS NULL",
        )
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        // Started, and the client allowed another attempt.
        sqlx::query(
            "UPDATE commands SET status = 'queued', claimed_by = NULL, lease_until = NULL, started_at = NULL
             WHERE status = 'running' AND lease_until < $1 AND attempts < max_attempts AND NOT cancel_requested",
        )
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        // Started and not to be repeated: shell commands are not idempotent.
        let sql = format!(
            "UPDATE commands SET status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'failed' END,
                    error = 'worker lost', finished_at = $1, claimed_by = NULL, lease_until = NULL
             WHERE status = 'running' AND lease_until < $1
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
                let priority: i64 = row.try_get::<i16, _>("priority").map(i64::from).map_err(db_error)?;
                let waiting: i64 = row.try_get("waiting").map_err(db_error)?;
                Ok((priority.clamp(0, 9) as u8, waiting.max(0) as u64))
            })
            .collect()
    }

    async fn wait_for_work(&self) {
        self.listener.get_or_init(|| self.listen()).await;
        self.work.notified().await;
    }
}
