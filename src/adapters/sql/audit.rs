//! `AuditLog` on SQL: the `audit_log` rows, written by group commit (concurrent entries share
//! one transaction), each with the webhook event of the execution it records.

use std::net::IpAddr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    command_rows,
    dialect::{Db, Dialect, Kind, Stmt, Tx, begin, commit, values_rows},
    errors::corrupt,
    group_commit::{BatchWriter, GroupCommit},
    outbox, output, sessions,
    values::Row,
};
use crate::{
    domain::{AuditEntry, AuditFilter, AuditOutcome, DomainError, OutboxEvent, Page, PageRequest, ProjectId},
    ports::{AuditLog, RanNow},
};

const COLUMNS: &str =
    "id, at, request_id, api_key_id, client_ip, project_id, command, exit_code, outcome, duration_ms, reason";
/// An entry written twice (a retry whose first answer was lost) is stored once.
const INSERT: &str = "INSERT INTO audit_log (id, at, request_id, api_key_id, client_ip, project_id, command, \
     exit_code, outcome, duration_ms, reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
     ON CONFLICT (id) DO NOTHING";

/// Entries without an event, many per statement.
async fn insert_entries<D: Dialect>(tx: &mut Tx<D>, entries: &[&AuditEntry]) -> Result<(), DomainError> {
    for chunk in entries.chunks(ENTRIES_PER_INSERT) {
        let sql = format!(
            "INSERT INTO audit_log ({COLUMNS}) VALUES {} ON CONFLICT (id) DO NOTHING",
            values_rows::<D>(chunk.len(), ENTRY_PARAMETERS)
        );
        let insert = chunk.iter().fold(Stmt::<D>::new(sql), |insert, entry| bind_entry(insert, entry));
        insert.execute(&mut *tx).await?;
    }
    Ok(())
}

/// Entries of one statement at most (`ENTRY_PARAMETERS` each).
const ENTRIES_PER_INSERT: usize = 1000;
/// The parameters of one entry, `$1` to `$11` of `INSERT`.
const ENTRY_PARAMETERS: usize = 11;

pub(crate) struct SqlAuditLog<D: Dialect> {
    db: Db<D>,
    writes: GroupCommit<AuditWriter<D>>,
}

impl<D: Dialect> SqlAuditLog<D> {
    pub(crate) fn new(db: Db<D>) -> Self {
        Self { writes: GroupCommit::new(AuditWriter { db: db.clone() }), db }
    }
}

/// An entry with the webhook event of the execution it records, if any.
pub(crate) struct AuditWrite {
    entry: AuditEntry,
    event: Option<OutboxEvent>,
    /// The request's trace, taken here because the writer runs outside the request's span.
    traceparent: Option<String>,
    ran_now: Option<RanNow>,
}

fn bind_entry<D: Dialect>(query: Stmt<D>, entry: &AuditEntry) -> Stmt<D> {
    query
        .uuid(Some(entry.id))
        .time(Some(entry.at))
        .value(entry.request_id.clone())
        .uuid(entry.api_key_id)
        .value(entry.client_ip.map(|ip| ip.to_string()))
        .value(entry.project_id.as_ref().map(|p| p.as_str().to_owned()))
        .value(entry.command.clone())
        .value(entry.exit_code)
        .value(entry.outcome.as_str())
        .value(entry.duration_ms.map(|ms| i64::try_from(ms).unwrap_or(i64::MAX)))
        .value(entry.reason.clone())
}

/// Inserts one entry inside the caller's transaction (the queue's recovery writes the entries
/// of the commands it takes back with their new states).
pub(super) async fn insert_entry<D: Dialect>(tx: &mut Tx<D>, entry: &AuditEntry) -> Result<(), DomainError> {
    bind_entry(Stmt::<D>::new(INSERT), entry).execute(tx).await.map(drop)
}

fn entry_from_row(row: &impl Row) -> Result<AuditEntry, DomainError> {
    let outcome: String = row.get("outcome")?;
    Ok(AuditEntry {
        id: row.required_uuid("id")?,
        at: row.required_time("at")?,
        request_id: row.get("request_id")?,
        api_key_id: row.uuid("api_key_id")?,
        client_ip: client_ip(row.get("client_ip")?)?,
        project_id: project(row.get("project_id")?)?,
        command: row.get("command")?,
        exit_code: row.int("exit_code")?.and_then(|c| i32::try_from(c).ok()),
        outcome: AuditOutcome::parse(&outcome).ok_or_else(|| corrupt("outcome", &outcome))?,
        duration_ms: row.int("duration_ms")?.map(|ms| ms.max(0) as u64),
        reason: row.get("reason")?,
    })
}

/// A stored client address (the audit log and the queue both keep who asked).
pub(crate) fn client_ip(raw: Option<String>) -> Result<Option<IpAddr>, DomainError> {
    raw.map(|s| s.parse().map_err(|e| corrupt("client_ip", e))).transpose()
}

fn project(raw: Option<String>) -> Result<Option<ProjectId>, DomainError> {
    raw.map(|s| ProjectId::parse(&s).map_err(|e| corrupt("project_id", e))).transpose()
}

pub(crate) struct AuditWriter<D: Dialect> {
    db: Db<D>,
}

#[async_trait]
impl<D: Dialect> BatchWriter for AuditWriter<D> {
    type Item = AuditWrite;
    type Output = ();

    /// One transaction (one WAL flush on Postgres) for every entry waiting. On Postgres each
    /// entry goes in with its event in one statement (a data-modifying CTE); on SQLite, where a
    /// statement costs no round trip, one look for the whole batch skips the events when no
    /// webhook is enabled.
    async fn write(&self, batch: &[AuditWrite]) -> Result<Vec<()>, DomainError> {
        let mut tx = begin(&self.db).await?;
        let with_event = format!("WITH entry AS ({INSERT}) {}", outbox::publish_sql(ENTRY_PARAMETERS + 1));
        let publish = D::KIND == Kind::Postgres
            || outbox::any_enabled::<D>(&mut tx, batch.iter().any(|w| w.event.is_some())).await?;
        let mut plain = Vec::new();
        for write in batch {
            match write.event.as_ref().filter(|_| publish) {
                Some(event) if D::KIND == Kind::Postgres => {
                    let entry = bind_entry(Stmt::<D>::new(with_event.clone()), &write.entry);
                    outbox::bind_event(entry, event, write.traceparent.clone()).execute(&mut tx).await?;
                }
                Some(event) => {
                    bind_entry(Stmt::<D>::new(INSERT), &write.entry).execute(&mut tx).await?;
                    outbox::publish_traced::<D>(&mut tx, event, write.traceparent.clone()).await?;
                }
                None => plain.push(&write.entry),
            }
        }
        insert_entries(&mut tx, &plain).await?;
        // The commands run now in this batch, with their output, one statement each.
        let ran_now: Vec<&RanNow> = batch.iter().filter_map(|w| w.ran_now.as_ref()).collect();
        let rows: Vec<_> = ran_now
            .iter()
            .map(|r| command_rows::CommandRow { command: &r.command, claimed_by: None, lease_until: None })
            .collect();
        command_rows::upsert_commands::<D>(&mut tx, &rows).await?;
        let output: Vec<_> = ran_now.iter().flat_map(|r| r.output.iter().map(|e| (r.command.id, e))).collect();
        output::insert_entries::<D>(&mut tx, &output).await?;
        for end in ran_now.iter().filter_map(|r| r.session.as_ref()) {
            sessions::end_session::<D>(&mut tx, end).await?;
        }
        commit(tx).await?;
        Ok(vec![(); batch.len()])
    }
}

#[async_trait]
impl<D: Dialect> AuditLog for SqlAuditLog<D> {
    #[tracing::instrument(name = "db audit.record", skip_all, fields(db.system = D::SYSTEM))]
    async fn record(&self, entry: &AuditEntry, event: Option<&OutboxEvent>) -> Result<(), DomainError> {
        let traceparent = event.and_then(|_| crate::telemetry::propagation::current_traceparent());
        self.writes.submit(AuditWrite { entry: entry.clone(), event: event.cloned(), traceparent, ran_now: None }).await
    }

    #[tracing::instrument(name = "db audit.record", skip_all, fields(db.system = D::SYSTEM))]
    async fn record_ran_now(
        &self,
        entry: &AuditEntry,
        event: Option<&OutboxEvent>,
        ran_now: &RanNow,
    ) -> Result<(), DomainError> {
        let traceparent = event.and_then(|_| crate::telemetry::propagation::current_traceparent());
        let write =
            AuditWrite { entry: entry.clone(), event: event.cloned(), traceparent, ran_now: Some(ran_now.clone()) };
        self.writes.submit(write).await
    }

    #[tracing::instrument(name = "db audit.list", skip_all, fields(db.system = D::SYSTEM))]
    async fn list(&self, filter: &AuditFilter, page: &PageRequest) -> Result<Page<AuditEntry>, DomainError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM audit_log
             WHERE ($1 IS NULL OR project_id = $1)
               AND ($2 IS NULL OR api_key_id = $2)
               AND ($3 IS NULL OR at >= $3)
               AND ($4 IS NULL OR at < $4)
               AND ($5 IS NULL OR outcome = $5)
               AND ($6 IS NULL OR (at, id) < (SELECT at, id FROM audit_log WHERE id = $6))
             ORDER BY at DESC, id DESC LIMIT $7"
        );
        let entries = Stmt::<D>::new(sql)
            .value(filter.project_id.as_ref().map(|p| p.as_str().to_owned()))
            .uuid(filter.api_key_id)
            .time(filter.since)
            .time(filter.until)
            .value(filter.outcome.map(|outcome| outcome.as_str().to_owned()))
            .page(page)
            .fetch_mapped(&self.db, entry_from_row)
            .await?;
        Ok(Page::from_rows(entries, page, |entry| entry.id))
    }

    async fn purge(&self, before: DateTime<Utc>) -> Result<u64, DomainError> {
        let sql = "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE at < $1 LIMIT 10000)";
        let mut purged = 0;
        loop {
            let done = Stmt::<D>::new(sql).time(Some(before)).execute(&self.db).await?;
            purged += done;
            if done < 10000 {
                return Ok(purged);
            }
        }
    }
}
