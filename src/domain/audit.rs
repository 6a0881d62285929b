//! The audit log: who ran what, where, and what came of it, including attempts that were refused.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::ProjectId;

/// Who is asking, as the HTTP layer established it; carried into services for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub api_key_id: Option<Uuid>,
    pub request_id: String,
    pub client_ip: Option<IpAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    Succeeded,
    Failed,
    TimedOut,
    Rejected,
    /// Stopped before it ended: cancelled, or killed because its client went away.
    Cancelled,
    Error,
}

impl AuditOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Succeeded => "succeeded",
            AuditOutcome::Failed => "failed",
            AuditOutcome::TimedOut => "timed_out",
            AuditOutcome::Rejected => "rejected",
            AuditOutcome::Cancelled => "cancelled",
            AuditOutcome::Error => "error",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Succeeded, Self::Failed, Self::TimedOut, Self::Rejected, Self::Cancelled, Self::Error]
            .into_iter()
            .find(|o| o.as_str() == raw)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct AuditEntry {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub request_id: String,
    pub api_key_id: Option<Uuid>,
    #[schema(value_type = Option<String>)]
    pub client_ip: Option<IpAddr>,
    pub project_id: Option<ProjectId>,
    pub command: Option<String>,
    pub exit_code: Option<i32>,
    pub outcome: AuditOutcome,
    pub duration_ms: Option<u64>,
    /// Why it ended as it did: a refusal's error code and message (`FORBIDDEN: …`), an
    /// execution's error (`the client went away; command killed`).
    pub reason: Option<String>,
}

/// Filters of `GET /audit`; all optional, combined with AND.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub project_id: Option<ProjectId>,
    pub api_key_id: Option<Uuid>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub outcome: Option<AuditOutcome>,
}

/// The id of the audit entry of attempt `attempt` of a queued command that will run again: the
/// command's own id is its last attempt's (so the entry of an attempt written twice, by its
/// worker and by the recovery that took it back, is stored once), earlier attempts get ids
/// derived from it.
pub fn attempt_entry_id(command_id: Uuid, attempt: u32) -> Uuid {
    let (high, low) = command_id.as_u64_pair();
    // The low 32 bits hold no version or variant bits, so the result is still a v4 UUID.
    Uuid::from_u64_pair(high, low ^ u64::from(attempt))
}
