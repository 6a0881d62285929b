//! Terminals: tickets for browsers, opening a shell in a project, and the audit rows at its
//! start and end. The bytes themselves go between the WebSocket (`http`) and the executor's
//! `TerminalHost`; what this service keeps of them is their count.
//!
//! A ticket is single-use and bound to its key and project: it is taken out of the store when
//! used, whatever happens next, so a ticket presented for another project is spent too.

use std::{net::IpAddr, sync::Arc, time::Duration};

use super::{
    ApiKeyService, AuditService, Authenticated, ProjectService,
    audit::Action,
    seats::{KeySeat, KeySeats},
};
use crate::{
    domain::{
        ApiKey, AuditOutcome, Caller, DomainError, IssuedTicket, ProjectId, Quota, Quotas, StoredTicket,
        TerminalEnding, TerminalSize, TerminalSummary, TicketSecret, Unauthenticated, terminal::TICKET_LIFETIME,
    },
    ports::{Clock, TerminalHost, TerminalIo, TicketStore},
};

pub struct TerminalService {
    tickets: Arc<dyn TicketStore>,
    host: Arc<dyn TerminalHost>,
    projects: Arc<ProjectService>,
    keys: Arc<ApiKeyService>,
    audit: Arc<AuditService>,
    clock: Arc<dyn Clock>,
    pub limits: TerminalLimits,
    /// Terminals open on this replica, by key: what the `terminals` quota counts.
    open: KeySeats,
}

/// How long terminals live.
#[derive(Debug, Clone, Copy)]
pub struct TerminalLimits {
    /// `RDEV_TERMINAL_IDLE_TIMEOUT`: how long a terminal lives with no byte either way.
    pub idle_timeout: Duration,
    /// `RDEV_TERMINAL_MAX_LIFETIME`: how long a terminal lives, however busy.
    pub max_lifetime: Duration,
}

/// Who opened a terminal where: what its end is audited with.
pub struct OpenedTerminal {
    pub io: TerminalIo,
    pub caller: Caller,
    pub project_id: ProjectId,
    /// Held while the terminal lives.
    pub seat: KeySeat,
}

impl TerminalService {
    pub fn new(
        tickets: Arc<dyn TicketStore>,
        host: Arc<dyn TerminalHost>,
        projects: Arc<ProjectService>,
        keys: Arc<ApiKeyService>,
        audit: Arc<AuditService>,
        clock: Arc<dyn Clock>,
        limits: TerminalLimits,
    ) -> Self {
        Self { tickets, host, projects, keys, audit, clock, limits, open: KeySeats::new(Quota::Terminals) }
    }

    /// A ticket for `key` to open a terminal in `project_id` (which must exist) within 30 s.
    pub async fn issue_ticket(&self, key: &ApiKey, project_id: &ProjectId) -> Result<IssuedTicket, DomainError> {
        self.projects.get(project_id).await?;
        let secret = TicketSecret::generate();
        let lifetime = chrono::Duration::from_std(TICKET_LIFETIME).unwrap_or(chrono::Duration::zero());
        let expires_at = self.clock.now() + lifetime;
        let stored =
            StoredTicket { hash: secret.hash(), api_key_id: key.id, project_id: project_id.clone(), expires_at };
        self.tickets.insert(&stored).await?;
        Ok(IssuedTicket { ticket: secret.expose().to_owned(), expires_at })
    }

    /// The key a ticket stands for, spending the ticket: 401 when it is malformed, unknown,
    /// used or expired, or when the key may no longer act; 403 when it was issued for another
    /// project or its key's allowlist does not hold `client_ip`.
    pub async fn redeem(
        &self,
        raw: &str,
        project_id: &ProjectId,
        client_ip: Option<IpAddr>,
    ) -> Result<Authenticated, DomainError> {
        let secret = TicketSecret::parse(raw).map_err(DomainError::Unauthenticated)?;
        let ticket = self
            .tickets
            .take(&secret.hash(), self.clock.now())
            .await?
            .ok_or(DomainError::Unauthenticated(Unauthenticated::Unknown))?;
        if &ticket.project_id != project_id {
            return Err(DomainError::Forbidden("this ticket was issued for another project".into()));
        }
        self.keys.authenticate_ticket_holder(ticket.api_key_id, client_ip).await
    }

    /// Starts a shell in the project, audited as it starts, if the caller's key has fewer than
    /// `quota` terminals open here (a terminal is a pty of this host, so the count is this
    /// replica's).
    pub async fn open(
        &self,
        caller: &Caller,
        project_id: &ProjectId,
        size: TerminalSize,
        quotas: Quotas,
    ) -> Result<OpenedTerminal, DomainError> {
        let seat = self.open.take(caller.api_key_id, quotas)?;
        let project = self.projects.get(project_id).await?;
        let what = format!("terminal opened ({}x{})", size.cols, size.rows);
        let io = match self.host.open(&project, size).await {
            Ok(io) => io,
            Err(error) => {
                let action = Action {
                    what: &what,
                    outcome: AuditOutcome::Error,
                    exit_code: None,
                    duration_ms: None,
                    reason: None,
                };
                self.audit.record_action(caller, project_id, action).await?;
                return Err(error);
            }
        };
        let action =
            Action { what: &what, outcome: AuditOutcome::Succeeded, exit_code: None, duration_ms: None, reason: None };
        self.audit.record_action(caller, project_id, action).await?;
        Ok(OpenedTerminal { io, caller: caller.clone(), project_id: project_id.clone(), seat })
    }

    /// The audit row of a terminal's end. A failure to write it is logged: the terminal is over
    /// either way, and its start is on record.
    pub async fn record_end(&self, caller: &Caller, project_id: &ProjectId, summary: &TerminalSummary) {
        let (outcome, exit_code) = match summary.ending {
            TerminalEnding::Exited(0) => (AuditOutcome::Succeeded, Some(0)),
            TerminalEnding::Exited(code) => (AuditOutcome::Failed, Some(code)),
            TerminalEnding::ClientClosed => (AuditOutcome::Succeeded, None),
            TerminalEnding::Idle => (AuditOutcome::TimedOut, None),
            TerminalEnding::Failed => (AuditOutcome::Error, None),
            TerminalEnding::KeyEnded(_) => (AuditOutcome::Rejected, None),
            TerminalEnding::Lifetime => (AuditOutcome::TimedOut, None),
        };
        let duration_ms = u64::try_from(summary.duration.as_millis()).unwrap_or(u64::MAX);
        let why = match summary.ending {
            TerminalEnding::KeyEnded(why) => Some(why.to_string()),
            _ => None,
        };
        let recorded = self
            .audit
            .record_action(
                caller,
                project_id,
                Action {
                    what: &summary.describe(),
                    outcome,
                    exit_code,
                    duration_ms: Some(duration_ms),
                    reason: why.as_deref(),
                },
            )
            .await;
        if let Err(error) = recorded {
            tracing::error!(%error, project.id = %project_id, "could not audit a terminal's end");
        }
    }

    /// Deletes expired tickets; returns how many.
    pub async fn purge_expired_tickets(&self) -> Result<u64, DomainError> {
        self.tickets.purge(self.clock.now()).await
    }
}
