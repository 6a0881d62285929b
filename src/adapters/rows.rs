//! Conversions between stored column values and domain types, shared by both SQL adapters so
//! that they differ only in SQL and column types.

use std::net::IpAddr;

use ipnet::IpNet;

use super::db::corrupt;
use crate::domain::{AuditOutcome, DomainError, ProjectId, Scope};

pub(crate) fn scopes_to_strings(scopes: &[Scope]) -> Vec<String> {
    scopes.iter().map(|s| s.as_str().to_owned()).collect()
}

pub(crate) fn scopes_from_strings(raw: Vec<String>) -> Result<Vec<Scope>, DomainError> {
    raw.iter().map(|s| Scope::parse(s).map_err(|e| corrupt("scope", e))).collect()
}

pub(crate) fn nets_to_strings(nets: &[IpNet]) -> Vec<String> {
    nets.iter().map(ToString::to_string).collect()
}

pub(crate) fn nets_from_strings(raw: Vec<String>) -> Result<Vec<IpNet>, DomainError> {
    raw.iter().map(|s| s.parse().map_err(|e| corrupt("allowed_ips", e))).collect()
}

pub(crate) fn ip_from_string(raw: Option<String>) -> Result<Option<IpAddr>, DomainError> {
    raw.map(|s| s.parse().map_err(|e| corrupt("client_ip", e))).transpose()
}

pub(crate) fn project_from_string(raw: Option<String>) -> Result<Option<ProjectId>, DomainError> {
    raw.map(|s| ProjectId::parse(&s).map_err(|e| corrupt("project_id", e))).transpose()
}

pub(crate) fn outcome_from_string(raw: &str) -> Result<AuditOutcome, DomainError> {
    AuditOutcome::parse(raw).ok_or_else(|| corrupt("outcome", raw))
}

pub(crate) fn u32_from_i32(raw: Option<i32>) -> Option<u32> {
    raw.and_then(|v| u32::try_from(v).ok())
}
