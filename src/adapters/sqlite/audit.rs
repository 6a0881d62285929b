//! `AuditLog` on SQLite, with group commit: concurrent entries share one transaction.

use async_trait::async_trait;
use sqlx::{Row, SqlitePool, sqlite::SqliteRow};

use super::{from_micros, micros, uuid_from_text};
use crate::{
    adapters::{
        audit_write::AuditWrite,
        db::db_error,
        group_commit::{BatchWriter, GroupCommit},
        rows,
    },
    domain::{AuditEntry, AuditFilter, DomainError, OutboxEvent, Page, PageRequest},
    ports::AuditLog,
};

pub struct SqliteAuditLog {
    pool: SqlitePool,
    writes: GroupCommit<AuditWriter>,
}

impl SqliteAuditLog {
    pub fn new(pool: SqlitePool) -> Self {
        Self { writes: GroupCommit::new(AuditWriter { pool: pool.clone() }), pool }
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

pub(crate) struct AuditWriter {
    pool: SqlitePool,
}

#[async_trait]
impl BatchWriter for AuditWriter {
    type Item = AuditWrite;
    type Output = ();

    async fn write(&self, batch: &[AuditWrite]) -> Result<Vec<()>, DomainError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?;
        // One look for the whole batch: with no enabled webhook, no event needs its insert.
        let subscribed = batch.iter().any(|w| w.event.is_some())
            && sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM webhooks WHERE enabled = 1)")
                .fetch_one(&mut *tx)
                .await
                .map_err(db_error)?;
        for write in batch {
            insert(&mut *tx, &write.entry).await?;
            if let Some(event) = write.event.as_ref().filter(|_| subscribed) {
                super::webhooks::publish_traced(&mut tx, event, write.traceparent.clone()).await?;
            }
        }
        tx.commit().await.map_err(db_error)?;
        Ok(vec![(); batch.len()])
    }
}

#[async_trait]
impl AuditLog for SqliteAuditLog {
    #[tracing::instrument(name = "db audit.record", skip_all, fields(db.system = "sqlite"))]
    async fn record(&self, entry: &AuditEntry, event: Option<&OutboxEvent>) -> Result<(), DomainError> {
        self.writes.submit(AuditWrite::new(entry, event)).await
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

    async fn purge(&self, before: chrono::DateTime<chrono::Utc>) -> Result<u64, DomainError> {
        let mut purged = 0;
        loop {
            let done =
                sqlx::query("DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE at < ?1 LIMIT 10000)")
                    .bind(micros(before))
                    .execute(&self.pool)
                    .await
                    .map_err(db_error)?;
            purged += done.rows_affected();
            if done.rows_affected() < 10000 {
                return Ok(purged);
            }
        }
    }
}
