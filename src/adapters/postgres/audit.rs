//! `AuditLog` on Postgres, with group commit: concurrent entries share one transaction.

use async_trait::async_trait;
use sqlx::{PgPool, Row, postgres::PgRow};

use super::webhooks::{PgQuery, bind_event, publish_sql};
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

pub struct PgAuditLog {
    pool: PgPool,
    writes: GroupCommit<AuditWriter>,
}

impl PgAuditLog {
    pub fn new(pool: PgPool) -> Self {
        Self { writes: GroupCommit::new(AuditWriter { pool: pool.clone() }), pool }
    }
}

fn entry_from_row(row: &PgRow) -> Result<AuditEntry, DomainError> {
    Ok(AuditEntry {
        id: row.try_get("id").map_err(db_error)?,
        at: row.try_get("at").map_err(db_error)?,
        request_id: row.try_get("request_id").map_err(db_error)?,
        api_key_id: row.try_get("api_key_id").map_err(db_error)?,
        client_ip: rows::ip_from_string(row.try_get("client_ip").map_err(db_error)?)?,
        project_id: rows::project_from_string(row.try_get("project_id").map_err(db_error)?)?,
        command: row.try_get("command").map_err(db_error)?,
        exit_code: row.try_get("exit_code").map_err(db_error)?,
        outcome: rows::outcome_from_string(row.try_get("outcome").map_err(db_error)?)?,
        duration_ms: row.try_get::<Option<i64>, _>("duration_ms").map_err(db_error)?.map(|ms| ms.max(0) as u64),
    })
}

const INSERT: &str = "INSERT INTO audit_log (id, at, request_id, api_key_id, client_ip, project_id, command, exit_code, outcome, duration_ms)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

fn bind_entry<'q>(query: PgQuery<'q>, entry: &'q AuditEntry) -> PgQuery<'q> {
    query
        .bind(entry.id)
        .bind(entry.at)
        .bind(&entry.request_id)
        .bind(entry.api_key_id)
        .bind(entry.client_ip.map(|ip| ip.to_string()))
        .bind(entry.project_id.as_ref().map(|p| p.as_str()))
        .bind(entry.command.as_deref())
        .bind(entry.exit_code)
        .bind(entry.outcome.as_str())
        .bind(entry.duration_ms.map(|ms| i64::try_from(ms).unwrap_or(i64::MAX)))
}

pub(crate) struct AuditWriter {
    pool: PgPool,
}

#[async_trait]
impl BatchWriter for AuditWriter {
    type Item = AuditWrite;
    type Output = ();

    /// One transaction, one WAL flush, for every entry waiting; each entry with its event in
    /// one statement (a data-modifying CTE).
    async fn write(&self, batch: &[AuditWrite]) -> Result<Vec<()>, DomainError> {
        let with_event = format!("WITH entry AS ({INSERT}) {}", publish_sql(11));
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        for write in batch {
            let query = match &write.event {
                None => bind_entry(sqlx::query(INSERT), &write.entry),
                Some(event) => bind_event(
                    bind_entry(sqlx::query(sqlx::AssertSqlSafe(with_event.clone())), &write.entry),
                    event,
                    write.traceparent.clone(),
                ),
            };
            query.execute(&mut *tx).await.map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(vec![(); batch.len()])
    }
}

#[async_trait]
impl AuditLog for PgAuditLog {
    #[tracing::instrument(name = "db audit.record", skip_all, fields(db.system = "postgresql"))]
    async fn record(&self, entry: &AuditEntry, event: Option<&OutboxEvent>) -> Result<(), DomainError> {
        self.writes.submit(AuditWrite::new(entry, event)).await
    }

    #[tracing::instrument(name = "db audit.list", skip_all, fields(db.system = "postgresql"))]
    async fn list(&self, filter: &AuditFilter, page: &PageRequest) -> Result<Page<AuditEntry>, DomainError> {
        let rows = sqlx::query(
            "SELECT id, at, request_id, api_key_id, client_ip, project_id, command, exit_code, outcome, duration_ms
             FROM audit_log
             WHERE ($1::text IS NULL OR project_id = $1)
               AND ($2::uuid IS NULL OR api_key_id = $2)
               AND ($3::timestamptz IS NULL OR at >= $3)
               AND ($4::timestamptz IS NULL OR at < $4)
               AND ($5::uuid IS NULL OR (at, id) < (SELECT at, id FROM audit_log WHERE id = $5))
             ORDER BY at DESC, id DESC LIMIT $6",
        )
        .bind(filter.project_id.as_ref().map(|p| p.as_str()))
        .bind(filter.api_key_id)
        .bind(filter.since)
        .bind(filter.until)
        .bind(page.after)
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
                sqlx::query("DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE at < $1 LIMIT 10000)")
                    .bind(before)
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
