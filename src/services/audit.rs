//! Reading the audit log, and writing entries for what services did.
//!
//! Every execution is audited. Refused attempts are too, within a budget: a flood of refusals
//! (no key, a bad key, 429s) must cost the attacker more than it costs our disk. Past the
//! budget they are counted in `audit_rejections_suppressed_total` and logged once per client
//! and minute instead.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{
    domain::{
        AuditEntry, AuditFilter, AuditOutcome, Caller, CommandEnd, CommandStatus, DomainError, OutboxEvent, Page,
        PageRequest, ProjectId, audit::attempt_entry_id,
    },
    ports::{AuditLog, Clock, RanNow, Recovered},
    telemetry::metrics::{AUDIT_BACKLOG_DROPPED_TOTAL, AUDIT_REJECTIONS_SUPPRESSED_TOTAL},
};

/// Rows of refused attempts written per client (API key, else address) per minute.
const REJECTIONS_PER_CLIENT_PER_MINUTE: u32 = 30;
/// Rows of refused attempts this replica writes per minute, whoever sends them.
const REJECTIONS_PER_MINUTE: u32 = 1200;
/// Longest command kept in the row of a refused attempt; longer ones end with `…`.
pub const MAX_REJECTED_COMMAND_BYTES: usize = 1024;

/// Entries of executions kept while the database is down, at most; past that the oldest go
/// (counted in `audit_backlog_dropped_total`, and logged).
const MAX_BACKLOG: usize = 10_000;

pub struct AuditService {
    log: Arc<dyn AuditLog>,
    clock: Arc<dyn Clock>,
    rejections: std::sync::Mutex<RejectionBudget>,
    /// Entries of executions whose write failed because the database was down, oldest first,
    /// with their webhook events: written by `write_backlog` once it answers.
    backlog: std::sync::Mutex<VecDeque<Kept>>,
}

/// An execution's entry kept for later, with what is written with it.
#[derive(Clone)]
struct Kept {
    entry: AuditEntry,
    event: Option<OutboxEvent>,
    ran_now: Option<RanNow>,
}

/// This minute's count of refused attempts written, overall and per client. A client enters
/// the map only with a row written, so the map holds at most `REJECTIONS_PER_MINUTE` entries.
#[derive(Default)]
struct RejectionBudget {
    minute: i64,
    total: u32,
    per_client: HashMap<String, u32>,
}

/// Whether a refused attempt gets its row.
#[derive(Debug, PartialEq, Eq)]
enum Admission {
    Write,
    /// Not written; `first` for the first one refused this minute (for one log line).
    Suppress {
        first: bool,
    },
}

impl RejectionBudget {
    fn admit(&mut self, client: &str, now: DateTime<Utc>) -> Admission {
        let minute = now.timestamp().div_euclid(60);
        if minute != self.minute {
            *self = Self { minute, ..Self::default() };
        }
        let used = self.per_client.get(client).copied().unwrap_or(0);
        if used >= REJECTIONS_PER_CLIENT_PER_MINUTE {
            self.per_client.insert(client.to_owned(), used.saturating_add(1));
            return Admission::Suppress { first: used == REJECTIONS_PER_CLIENT_PER_MINUTE };
        }
        if self.total >= REJECTIONS_PER_MINUTE {
            self.total = self.total.saturating_add(1);
            return Admission::Suppress { first: self.total == REJECTIONS_PER_MINUTE + 1 };
        }
        self.total += 1;
        self.per_client.insert(client.to_owned(), used + 1);
        Admission::Write
    }
}

/// A command cut to `max` bytes at a character boundary, marked with `…` when cut.
fn shortened(command: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if command.len() <= max {
        return command.into();
    }
    let cut = (0..=max).rev().find(|i| command.is_char_boundary(*i)).unwrap_or(0);
    format!("{}…", &command[..cut]).into()
}

/// What one audited attempt was about; the caller and the time are added by `AuditService`.
#[derive(Debug, Clone)]
pub struct AuditRecord<'a> {
    pub id: Uuid,
    pub project_id: Option<&'a ProjectId>,
    pub command: Option<&'a str>,
    pub exit_code: Option<i32>,
    pub outcome: AuditOutcome,
    pub duration_ms: Option<u64>,
    pub reason: Option<&'a str>,
}

impl<'a> AuditRecord<'a> {
    /// The entry of an execution that ended as `end`.
    pub fn of_end(id: Uuid, project_id: &'a ProjectId, command: &'a str, end: &'a CommandEnd) -> Self {
        Self {
            id,
            project_id: Some(project_id),
            command: Some(command),
            exit_code: end.exit_code(),
            outcome: end.audit_outcome(),
            duration_ms: end.duration_ms(),
            reason: end.reason(),
        }
    }
}

/// An action of a key that is not a command of the queue or of `/shell`: a file change, a
/// terminal's start or end.
pub struct Action<'a> {
    /// What it was, e.g. `PUT file src/main.rs`; kept to `MAX_REJECTED_COMMAND_BYTES`.
    pub what: &'a str,
    pub outcome: AuditOutcome,
    pub exit_code: Option<i32>,
    pub duration_ms: Option<u64>,
    pub reason: Option<&'a str>,
}

impl AuditService {
    pub fn new(log: Arc<dyn AuditLog>, clock: Arc<dyn Clock>) -> Self {
        Self { log, clock, rejections: Default::default(), backlog: Default::default() }
    }

    /// Records the entry of an execution (a process that was started), with the webhook event of
    /// the command it describes and, for a command run now, its command row and last output,
    /// all in the same transaction. When the database is down they are kept and written later
    /// by `write_backlog`, and the error returned: every process started gets its row, and the
    /// caller still learns that it is not stored yet.
    pub async fn record_execution(
        &self,
        caller: &Caller,
        record: AuditRecord<'_>,
        event: Option<&OutboxEvent>,
        ran_now: Option<RanNow>,
    ) -> Result<(), DomainError> {
        self.write_or_keep(Kept { entry: self.entry(caller, record), event: event.cloned(), ran_now }).await
    }

    /// Writes `kept`; while the database is down, keeps it for `write_backlog` and says so.
    async fn write_or_keep(&self, kept: Kept) -> Result<(), DomainError> {
        match self.write(&kept).await {
            Err(error @ DomainError::Unavailable(_)) => {
                self.keep_for_later(kept);
                Err(error)
            }
            result => result,
        }
    }

    async fn write(&self, kept: &Kept) -> Result<(), DomainError> {
        match &kept.ran_now {
            None => self.log.record(&kept.entry, kept.event.as_ref()).await,
            Some(ran_now) => self.log.record_ran_now(&kept.entry, kept.event.as_ref(), ran_now).await,
        }
    }

    fn keep_for_later(&self, kept: Kept) {
        let mut backlog = self.backlog.lock().unwrap_or_else(|p| p.into_inner());
        if backlog.len() >= MAX_BACKLOG
            && let Some(dropped) = backlog.pop_front()
        {
            metrics::counter!(AUDIT_BACKLOG_DROPPED_TOTAL).increment(1);
            tracing::error!(audit.id = %dropped.entry.id, "audit backlog full: dropped its oldest entry");
        }
        tracing::warn!(audit.id = %kept.entry.id, kept = backlog.len() + 1, "audit entry kept until the database answers");
        backlog.push_back(kept);
    }

    /// Writes the entries kept while the database was down, oldest first, until one fails;
    /// returns how many were written. Cheap when there are none.
    pub async fn write_backlog(&self) -> usize {
        let mut written = 0;
        loop {
            let next = self.backlog.lock().unwrap_or_else(|p| p.into_inner()).front().cloned();
            let Some(kept) = next else { return written };
            match self.write(&kept).await {
                // A conflict: it was written after all (the answer to the first try was lost).
                Ok(()) | Err(DomainError::Conflict(_)) => {
                    let mut backlog = self.backlog.lock().unwrap_or_else(|p| p.into_inner());
                    if backlog.front().is_some_and(|front| front.entry.id == kept.entry.id) {
                        backlog.pop_front();
                    }
                    written += 1;
                }
                Err(error) => {
                    tracing::debug!(%error, "audit backlog not written yet");
                    return written;
                }
            }
        }
    }

    /// How many entries wait in the backlog.
    pub fn backlog_len(&self) -> usize {
        self.backlog.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The entry of a started queued command that a recovery took back from a worker that is
    /// gone: an execution like any other, in the name of who queued it.
    pub fn recovery_entry(&self, recovered: &Recovered) -> AuditEntry {
        let command = recovered.command();
        let (id, outcome) = match recovered {
            Recovered::Retried(_) => (attempt_entry_id(command.id, command.attempts), AuditOutcome::Error),
            Recovered::Lost(_) if command.status == CommandStatus::Cancelled => (command.id, AuditOutcome::Cancelled),
            Recovered::Lost(_) => (command.id, AuditOutcome::Error),
        };
        let record = AuditRecord {
            id,
            project_id: Some(&command.project_id),
            command: Some(&command.command),
            exit_code: None,
            outcome,
            duration_ms: None,
            reason: Some("its worker's replica went away while it ran"),
        };
        self.entry(&command.caller, record)
    }

    /// Writes an execution's entry that could not be stored with its command: alone now, or
    /// from the backlog once the database is back.
    pub async fn record_later(&self, entry: AuditEntry) {
        if let Err(error) = self.write_or_keep(Kept { entry, event: None, ran_now: None }).await {
            tracing::error!(%error, "could not write the audit entry of a queued command");
        }
    }

    /// The entry of `record`, made by `caller` now (a queued command's end stores it in the
    /// transaction of its final status).
    pub(super) fn entry(&self, caller: &Caller, record: AuditRecord<'_>) -> AuditEntry {
        AuditEntry {
            id: record.id,
            at: self.clock.now(),
            request_id: caller.request_id.clone(),
            api_key_id: caller.api_key_id,
            client_ip: caller.client_ip,
            project_id: record.project_id.cloned(),
            command: record.command.map(str::to_owned),
            exit_code: record.exit_code,
            outcome: record.outcome,
            duration_ms: record.duration_ms,
            reason: record.reason.map(|reason| shortened(reason, MAX_REJECTED_COMMAND_BYTES).into_owned()),
        }
    }

    /// Records a refused attempt, within the budget above, its command shortened to
    /// `MAX_REJECTED_COMMAND_BYTES`, with `reason`, what the client was told. The refusal is what
    /// the client must see, so a failure to write it is logged rather than returned.
    pub async fn record_rejection(
        &self,
        caller: &Caller,
        project_id: Option<&ProjectId>,
        command: Option<&str>,
        reason: Option<&str>,
    ) {
        if !self.admit_rejection(caller) {
            return;
        }
        let command = command.map(|c| shortened(c, MAX_REJECTED_COMMAND_BYTES));
        let record = AuditRecord {
            id: Uuid::new_v4(),
            project_id,
            command: command.as_deref(),
            exit_code: None,
            outcome: AuditOutcome::Rejected,
            duration_ms: None,
            reason,
        };
        if let Err(error) = self.log.record(&self.entry(caller, record), None).await {
            tracing::error!(%error, "could not write audit entry for a rejected request");
        }
    }

    /// Whether a refusal of `caller` is still within its budget of audited refusals; counts
    /// (and logs, once a minute) those that are not.
    fn admit_rejection(&self, caller: &Caller) -> bool {
        let client = match (caller.api_key_id, caller.client_ip) {
            (Some(key), _) => format!("key {key}"),
            (None, Some(ip)) => format!("address {ip}"),
            (None, None) => "unknown client".to_owned(),
        };
        let admission = self.rejections.lock().unwrap_or_else(|p| p.into_inner()).admit(&client, self.clock.now());
        if let Admission::Suppress { first } = admission {
            metrics::counter!(AUDIT_REJECTIONS_SUPPRESSED_TOTAL).increment(1);
            if first {
                tracing::warn!(client, "too many refused attempts: not auditing more of them this minute");
            }
            return false;
        }
        true
    }

    /// Records a change to a project's files (`command` says which), before the answer: a write
    /// that cannot be audited is answered as the database's failure. A refused change counts
    /// against the same budget as refused executions: past it, it is not recorded.
    pub async fn record_file_change(
        &self,
        caller: &Caller,
        project_id: &ProjectId,
        command: &str,
        outcome: AuditOutcome,
        reason: Option<&str>,
    ) -> Result<(), DomainError> {
        if outcome == AuditOutcome::Rejected && !self.admit_rejection(caller) {
            return Ok(());
        }
        let action = Action { what: command, outcome, exit_code: None, duration_ms: None, reason };
        self.record_action(caller, project_id, action).await
    }

    /// Records `action`, before the answer.
    pub async fn record_action(
        &self,
        caller: &Caller,
        project_id: &ProjectId,
        action: Action<'_>,
    ) -> Result<(), DomainError> {
        let command = shortened(action.what, MAX_REJECTED_COMMAND_BYTES);
        let record = AuditRecord {
            id: Uuid::new_v4(),
            project_id: Some(project_id),
            command: Some(&command),
            exit_code: action.exit_code,
            outcome: action.outcome,
            duration_ms: action.duration_ms,
            reason: action.reason,
        };
        self.log.record(&self.entry(caller, record), None).await
    }

    pub async fn list(&self, filter: &AuditFilter, page: &PageRequest) -> Result<Page<AuditEntry>, DomainError> {
        self.log.list(filter, page).await
    }

    /// Deletes entries older than `retention`; returns how many.
    pub async fn purge_older_than(&self, retention: std::time::Duration) -> Result<u64, DomainError> {
        let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        self.log.purge(self.clock.now() - retention).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_written_within_a_budget_per_client_and_overall() {
        let mut budget = RejectionBudget::default();
        let now = Utc::now();
        for _ in 0..REJECTIONS_PER_CLIENT_PER_MINUTE {
            assert_eq!(budget.admit("a", now), Admission::Write);
        }
        assert_eq!(budget.admit("a", now), Admission::Suppress { first: true });
        assert_eq!(budget.admit("a", now), Admission::Suppress { first: false });
        assert_eq!(budget.admit("b", now), Admission::Write, "another client has its own budget");
        for n in 0..REJECTIONS_PER_MINUTE * 2 {
            budget.admit(&format!("c{n}"), now);
        }
        assert!(budget.per_client.len() <= REJECTIONS_PER_MINUTE as usize, "memory stays bounded");
        assert!(matches!(budget.admit("fresh", now), Admission::Suppress { .. }));
        assert_eq!(budget.admit("a", now + chrono::Duration::seconds(60)), Admission::Write, "a new minute");
    }

    #[test]
    fn long_commands_are_shortened_on_a_character_boundary() {
        assert_eq!(shortened("short", 10), "short");
        assert_eq!(shortened("ééé", 3), "é…");
    }
}
