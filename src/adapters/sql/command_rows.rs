//! A command as a row of `commands`: read back (`command_from_row`), and written whole
//! (`upsert_commands`): the queue's enqueue, and a command run now as it starts and ends.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::{
    audit::client_ip,
    dialect::{Dialect, On, Stmt, values_rows},
    errors::corrupt,
    values::Row,
};
use crate::domain::{Caller, Command, CommandOrigin, CommandStatus, DomainError, Omitted, ProjectId};

pub(super) const COLUMNS: &str = "id, project_id, command, workdir, env, timeout_secs, priority, status, attempts, max_attempts, \
     api_key_id, request_id, client_ip, exit_code, stdout, stderr, stdout_truncated, stderr_truncated, error, \
     cancel_requested, created_at, started_at, finished_at, max_output_bytes, stdout_omitted_offset, \
     stdout_omitted_bytes, stderr_omitted_offset, stderr_omitted_bytes, origin, session_id, stdin";

pub(super) fn command_from_row(row: &impl Row) -> Result<Command, DomainError> {
    let status: String = row.get("status")?;
    let project: String = row.get("project_id")?;
    let origin: String = row.get("origin")?;
    Ok(Command {
        id: row.required_uuid("id")?,
        origin: CommandOrigin::parse(&origin).ok_or_else(|| corrupt("command origin", &origin))?,
        session_id: row.uuid("session_id")?,
        stdin: row.get::<Option<Vec<u8>>>("stdin")?.map(Bytes::from),
        project_id: ProjectId::parse(&project).map_err(|e| corrupt("project_id", e))?,
        command: row.get("command")?,
        workdir: row.get("workdir")?,
        env: row.json::<BTreeMap<String, String>>("env")?,
        timeout_secs: row.required_int("timeout_secs")?.max(0) as u64,
        priority: row.required_int("priority")?.clamp(0, 9) as u8,
        status: CommandStatus::parse(&status).ok_or_else(|| corrupt("command status", &status))?,
        attempts: row.count("attempts")?,
        max_attempts: row.count("max_attempts")?,
        exit_code: row.int("exit_code")?.and_then(|c| i32::try_from(c).ok()),
        stdout: row.get("stdout")?,
        stderr: row.get("stderr")?,
        stdout_truncated: row.get("stdout_truncated")?,
        stderr_truncated: row.get("stderr_truncated")?,
        max_output_bytes: usize::try_from(row.required_int("max_output_bytes")?).unwrap_or(usize::MAX),
        stdout_omitted: omitted(row, "stdout")?,
        stderr_omitted: omitted(row, "stderr")?,
        error: row.get("error")?,
        cancel_requested: row.get("cancel_requested")?,
        created_at: row.required_time("created_at")?,
        started_at: row.time("started_at")?,
        finished_at: row.time("finished_at")?,
        caller: Caller {
            api_key_id: row.uuid("api_key_id")?,
            request_id: row.get("request_id")?,
            client_ip: client_ip(row.get("client_ip")?)?,
        },
    })
}

/// Output as a TEXT column can hold it: Postgres text has no NUL, so a NUL becomes U+FFFD (the
/// output log keeps the raw bytes).
pub(super) fn storable(output: Option<&String>) -> Option<String> {
    output.map(|text| if text.contains('\0') { text.replace('\0', "\u{fffd}") } else { text.clone() })
}

/// Where `stream`'s middle was dropped, from its two columns.
fn omitted(row: &impl Row, stream: &str) -> Result<Option<Omitted>, DomainError> {
    let offset = row.int(&format!("{stream}_omitted_offset"))?;
    let bytes = row.int(&format!("{stream}_omitted_bytes"))?;
    Ok(offset.zip(bytes).map(|(offset, bytes)| Omitted { offset: offset.max(0) as u64, bytes: bytes.max(0) as u64 }))
}

/// An `Omitted` as its two columns.
pub(super) fn omitted_columns(omitted: Option<Omitted>) -> (Option<i64>, Option<i64>) {
    let to_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    (omitted.map(|o| to_i64(o.offset)), omitted.map(|o| to_i64(o.bytes)))
}

/// A command stored whole: queued, a command run now as it starts (`claimed_by` this replica
/// until `lease_until`, so the recovery takes it back if the replica dies), or as it ended.
pub(super) struct CommandRow<'c> {
    pub command: &'c Command,
    pub claimed_by: Option<&'c str>,
    pub lease_until: Option<DateTime<Utc>>,
}

/// Commands of one statement at most (32 parameters each).
const COMMANDS_PER_UPSERT: usize = 500;

/// Stores commands whole, one statement for many (the audit writer's batch): new ones, or the
/// new state of ones stored before.
pub(super) async fn upsert_commands<'a, D: Dialect>(
    on: impl Into<On<'a, D>>,
    rows: &[CommandRow<'_>],
) -> Result<(), DomainError> {
    let mut on = on.into();
    for chunk in rows.chunks(COMMANDS_PER_UPSERT) {
        let sql = format!(
            "INSERT INTO commands (id, origin, project_id, command, workdir, env, timeout_secs, priority, max_attempts,
                                   attempts, api_key_id, request_id, client_ip, created_at, started_at, max_output_bytes,
                                   status, exit_code, stdout, stderr, stdout_truncated, stderr_truncated, error,
                                   finished_at, stdout_omitted_offset, stdout_omitted_bytes, stderr_omitted_offset,
                                   stderr_omitted_bytes, claimed_by, lease_until, session_id, stdin)
             VALUES {}
             ON CONFLICT (id) DO UPDATE SET
                status = excluded.status, exit_code = excluded.exit_code, stdout = excluded.stdout,
                stderr = excluded.stderr, stdout_truncated = excluded.stdout_truncated,
                stderr_truncated = excluded.stderr_truncated, error = excluded.error, started_at = excluded.started_at,
                finished_at = excluded.finished_at, stdout_omitted_offset = excluded.stdout_omitted_offset,
                stdout_omitted_bytes = excluded.stdout_omitted_bytes,
                stderr_omitted_offset = excluded.stderr_omitted_offset,
                stderr_omitted_bytes = excluded.stderr_omitted_bytes, claimed_by = excluded.claimed_by,
                lease_until = excluded.lease_until, stdin = excluded.stdin",
            values_rows::<D>(chunk.len(), 32)
        );
        let mut upsert = Stmt::<D>::new(sql);
        for row in chunk {
            upsert = bind_row(upsert, row);
        }
        upsert.execute(on.reborrow()).await?;
    }
    Ok(())
}

fn bind_row<D: Dialect>(query: Stmt<D>, row: &CommandRow<'_>) -> Stmt<D> {
    let command = row.command;
    let (stdout_offset, stdout_bytes) = omitted_columns(command.stdout_omitted);
    let (stderr_offset, stderr_bytes) = omitted_columns(command.stderr_omitted);
    query
        .uuid(Some(command.id))
        .value(command.origin.as_str())
        .value(command.project_id.as_str().to_owned())
        .value(command.command.clone())
        .value(command.workdir.clone())
        .json(&command.env)
        .value(i32::try_from(command.timeout_secs).unwrap_or(i32::MAX))
        .value(i16::from(command.priority))
        .value(i32::try_from(command.max_attempts).unwrap_or(i32::MAX))
        .value(i32::try_from(command.attempts).unwrap_or(i32::MAX))
        .uuid(command.caller.api_key_id)
        .value(command.caller.request_id.clone())
        .value(command.caller.client_ip.map(|ip| ip.to_string()))
        .time(Some(command.created_at))
        .time(command.started_at)
        .value(i64::try_from(command.max_output_bytes).unwrap_or(i64::MAX))
        .value(command.status.as_str())
        .value(command.exit_code)
        .value(storable(command.stdout.as_ref()))
        .value(storable(command.stderr.as_ref()))
        .value(command.stdout_truncated)
        .value(command.stderr_truncated)
        .value(command.error.clone())
        .time(command.finished_at)
        .value(stdout_offset)
        .value(stdout_bytes)
        .value(stderr_offset)
        .value(stderr_bytes)
        .value(row.claimed_by.map(str::to_owned))
        .time(row.lease_until)
        .uuid(command.session_id)
        // Needed until it runs; a command that ended keeps none.
        .value(command.stdin.as_ref().filter(|_| !command.status.is_final()).map(|b| b.to_vec()))
}
