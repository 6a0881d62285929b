//! `GET /audit`: the audit log, newest first, filtered and paginated.

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    domain::{AuditEntry, AuditFilter, AuditOutcome, DomainError, PageRequest, ProjectId},
    http::{
        auth::{Authorized, scope},
        error::{ApiError, ErrorBody},
        extract::ApiQuery,
        state::AppState,
    },
};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Only this project.
    #[param(pattern = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")]
    project_id: Option<String>,
    api_key_id: Option<Uuid>,
    /// Entries at or after this time (RFC 3339).
    #[serde(default, deserialize_with = "rfc3339")]
    since: Option<DateTime<Utc>>,
    /// Entries before this time (RFC 3339).
    #[serde(default, deserialize_with = "rfc3339")]
    until: Option<DateTime<Utc>>,
    /// Only this outcome: succeeded, failed, timed_out, rejected, cancelled or error.
    outcome: Option<String>,
    /// Items per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
}

/// A time in RFC 3339, with a message that says so (chrono's says only "input contains invalid
/// characters").
fn rfc3339<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    let raw = String::deserialize(deserializer)?;
    DateTime::parse_from_rfc3339(&raw)
        .map(|time| Some(time.with_timezone(&Utc)))
        .map_err(|_| serde::de::Error::custom(format!("{raw:?} is not an RFC 3339 time, such as 2026-12-07T09:30:00Z")))
}

fn outcome(raw: &str) -> Result<AuditOutcome, DomainError> {
    AuditOutcome::parse(raw).ok_or_else(|| {
        DomainError::invalid("outcome", "one of succeeded, failed, timed_out, rejected, cancelled, error")
    })
}

#[derive(Serialize, ToSchema)]
pub struct AuditList {
    entries: Vec<AuditEntry>,
    next_cursor: Option<String>,
}

/// List audit entries
///
/// Every execution (whatever ended it) and every refused attempt to execute, newest first. Filters
/// combine with AND (`project_id`, `api_key_id`, `since`, `until`, `outcome`); `since` is
/// inclusive, `until` exclusive. Scope `audit:read`.
#[utoipa::path(
    get, path = "/audit", tag = "audit", security(("api_key" = [])),
    params(AuditParams),
    responses((status = 200, body = AuditList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody))
)]
pub async fn list_audit(
    _auth: Authorized<scope::AuditRead>,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> Result<Json<AuditList>, ApiError> {
    let filter = AuditFilter {
        project_id: params.project_id.as_deref().map(ProjectId::parse).transpose()?,
        api_key_id: params.api_key_id,
        since: params.since,
        until: params.until,
        outcome: params.outcome.as_deref().map(outcome).transpose()?,
    };
    let page = state.audit.list(&filter, &PageRequest::parse(params.limit, params.cursor.as_deref())?).await?;
    Ok(Json(AuditList { entries: page.items, next_cursor: page.next_cursor }))
}
