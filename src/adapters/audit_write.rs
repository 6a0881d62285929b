//! An audit entry on its way to the group-commit writer (`group_commit`), shared by both SQL
//! audit logs.

use crate::domain::{AuditEntry, OutboxEvent};

/// An entry with the webhook event of the execution it records, if any.
pub(crate) struct AuditWrite {
    pub entry: AuditEntry,
    pub event: Option<OutboxEvent>,
    /// The request's trace, taken here because the writer runs outside the request's span.
    pub traceparent: Option<String>,
}

impl AuditWrite {
    pub(crate) fn new(entry: &AuditEntry, event: Option<&OutboxEvent>) -> Self {
        let traceparent = event.and_then(|_| crate::telemetry::propagation::current_traceparent());
        Self { entry: entry.clone(), event: event.cloned(), traceparent }
    }
}
