//! `AuditLog` on SQLite, with group commit: concurrent entries share one transaction.

use std::sync::OnceLock;

use async_trait::async_trait;
use sqlx::{Row, SqlitePool, sqlite::SqliteRow};
use tokio::sync::{mpsc, oneshot};

use super::{from_micros, micros, uuid_from_text};
use crate::{
    adapters::{db::db_error, rows},
    domain::{AuditEntry, AuditFilter, DomainError, OutboxEvent, Page, PageRequest},
    ports::AuditLog,
};

pub struct SqliteAuditLog {
    pool: SqlitePool,
    /// The group-commit writer, started by the first entry (so construction needs no runtime).
    writer: OnceLock<mpsc::Sender<Pending>>,
}

impl SqliteAuditLog {
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool, writer: OnceLock::new() }
    }
}

fn entry_from_row(row: &SqliteRow) -> Result<AuditEntry, DomainError> {
    let api_key_id: Option<String> = row.try_get("api_key_id").map_err(db_error)?;
    Ok(AuditEntry {
        id: uuid_from_text(row.try_get("id").map_err(db_error)?)?,
        at: from_micros(row.try_get("at").map_err(db_error)?)?,
        request_id: row.try_get("request_id").map_err(db_error)?,
        api_key_id: api_key_id.as_deref().map(uuid_from_text).transpose()?,
        client_ip: rows::ip_from_string(row.try_get("client_ip").map_err(db_error)?)?,
        project_id: rows::project_from_string(row.try_get("project_id").map_err(db_error)?)?,
        command: row.try_get("command").map_err(db_error)?,
        exit_code: row.try_get("exit_code").map_err(db_error)?,
        outcome: rows::outcome_from_string(row.try_get("outcome").map_err(db_error)?)?,
        duration_ms: row.try_get::<Option<i64>, _>("duration_ms").map_err(db_error)?.map(|ms| ms.max(0) as u64),
    })
}

/// One audit row, on the pool or inside a transaction.
async fn insert<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Sqlite>,
    entry: &AuditEntry,
) -> Result<(), DomainError> {
    sqlx::query(
        "INSERT INTO audit_log (id, at, request_id, api_key_id, client_ip, project_id, command, exit_code, outcome, duration_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )
    .bind(entry.id.to_string())
    .bind(micros(entry.at))
    .bind(&entry.request_id)
    .bind(entry.api_key_id.map(|id| id.to_string()))
    .bind(entry.client_ip.map(|ip| ip.to_string()))
    .bind(entry.project_id.as_ref().map(|p| p.as_str()))
    .bind(entry.command.as_deref())
    .bind(entry.exit_code)
    .bind(entry.outcome.as_str())
    .bind(entry.duration_ms.map(|ms| i64::try_from(ms).unwrap_or(i64::MAX)))
    .execute(executor)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// An entry on its way to the writer, and who waits for its commit.
struct Pending {
    entry: AuditEntry,
    event: Option<OutboxEvent>,
    traceparent: Option<String>,
    committed: oneshot::Sender<Result<(), DomainError>>,
}

/// Most entries committed in one transaction.
const MAX_BATCH: usize = 64;

/// Group commit: takes every entry waiting and writes them in one transaction. Requests that
/// arrive together share one BEGIN and one COMMIT instead of queueing for the one connection
/// with a transaction each; each is answered only after its entry is committed.
async fn write_batches(pool: SqlitePool, mut pending: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while pending.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let result = write_batch(&pool, &batch).await;
        for waiting in batch.drain(..) {
            let answer = match &result {
                Ok(()) => Ok(()),
                Err(DomainError::Unavailable(why)) => Err(DomainError::Unavailable(why.clone())),
                Err(other) => Err(DomainError::internal(anyhow::anyhow!("writing the audit log: {other}"))),
            };
            let _ = waiting.committed.send(answer);
        }
    }
}

async fn write_batch(pool: &SqlitePool, batch: &[Pending]) -> Result<(), DomainError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
    // One look for the whole batch: with no enabled webhook, no event needs its insert.
    let subscribed = batch.iter().any(|p| p.event.is_some())
        && sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM webhooks WHERE enabled = 1)")
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
    for waiting in batch {
        insert(&mut *tx, &waiting.entry).await?;
        if let Some(event) = waiting.event.as_ref().filter(|_| subscribed) {
            super::webhooks::publish_traced(&mut tx, event, waiting.traceparent.clone()).await?;
        }
    }
    tx.commit().await.map_err(db_error)
}

#[async_trait]
impl AuditLog for SqliteAuditLog {
    #[tracing::instrument(name = "db audit.record", skip_all, fields(db.system = "sqlite"))]
    async fn record(&self, entry: &AuditEntry, event: Option<&OutboxEvent>) -> Result<(), DomainError> {
        let writer = self.writer.get_or_init(|| {
            let (sender, receiver) = mpsc::channel(1024);
            tokio::spawn(write_batches(self.pool.clone(), receiver));
            sender
        });
        let (committed, commit) = oneshot::channel();
        let traceparent = event.and_then(|_| crate::telemetry::propagation::current_traceparent());
        let pending = Pending { entry: entry.clone(), event: event.cloned(), traceparent, committed };
        let gone = || DomainError::Unavailable("the audit writer has stopped".into());
        writer.send(pending).await.map_err(|_| gone())?;
        commit.await.map_err(|_| gone())?
    }

    #[tracing::instrument(name = "db audit.list", skip_all, fields(db.system = "sqlite"))]
    async fn list(&self, filter: &AuditFilter, page: &PageRequest) -> Result<Page<AuditEntry>, DomainError> {
        let rows = sqlx::query(
            "SELECT id, at, request_id, api_key_id, client_ip, project_id, command, exit_code, outcome, duration_ms
             FROM audit_log
             WHERE (?1 IS NULL OR project_id = ?1)
               AND (?2 IS NULL OR api_key_id = ?2)
               AND (?3 IS NULL OR at >= ?3)
               AND (?4 IS NULL OR at < ?4)
               AND (?5 IS NULL OR (at, id) < (SELECT at, id FROM audit_log WHERE id = ?5))
             ORDER BY at DESC, id DESC LIMIT ?6",
        )
        .bind(filter.project_id.as_ref().map(|p| p.as_str()))
        .bind(filter.api_key_id.map(|id| id.to_string()))
        .bind(filter.since.map(micros))
        .bind(filter.until.map(micros))
        .bind(page.after.map(|id| id.to_string()))
        .bind(page.fetch_limit())
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let entries = rows.iter().map(entry_from_row).collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_rows(entries, page, |entry| entry.id))
    }
}
