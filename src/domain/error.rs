//! The one error type that crosses every port. Adapters translate their own errors into it where
//! they occur; `http::error` maps it to a status code and a JSON body, in one place.

use std::collections::BTreeMap;

/// Field name → what is wrong with it, reported all at once so a client fixes a request in one go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldErrors(pub BTreeMap<String, String>);

impl FieldErrors {
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.entry(field.into()).or_insert_with(|| message.into());
    }

    pub fn single(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut errors = Self::default();
        errors.add(field, message);
        errors
    }

    /// `Ok(())` when nothing was added, else the collected errors as a `DomainError`.
    pub fn into_result(self) -> Result<(), DomainError> {
        if self.0.is_empty() { Ok(()) } else { Err(DomainError::Validation(self)) }
    }
}

impl std::fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for (field, message) in &self.0 {
            if !first {
                f.write_str("; ")?;
            }
            write!(f, "{field}: {message}")?;
            first = false;
        }
        Ok(())
    }
}

/// Why a request could not be authenticated. The message tells the client which, so an expired
/// key is not mistaken for a typo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unauthenticated {
    #[error("missing X-API-Key header")]
    Missing,
    #[error("malformed API key")]
    Malformed,
    #[error("unknown API key")]
    Unknown,
    #[error("API key has been revoked")]
    Revoked,
    #[error("API key has expired")]
    Expired,
    /// An old secret of a rotated key, after its grace period.
    #[error("API key secret was replaced by a rotation and its grace period has ended")]
    Superseded,
}

#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The message is `"<entity> not found"`; operators grep for `project not found`.
    #[error("{entity} not found")]
    NotFound { entity: &'static str, id: String },
    #[error("invalid request: {0}")]
    Validation(FieldErrors),
    #[error("{0}")]
    Unauthenticated(Unauthenticated),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    /// A condition of the request (`If-Match`) does not hold.
    #[error("{0}")]
    PreconditionFailed(String),
    /// A body larger than the server takes.
    #[error("{0}")]
    TooLarge(String),
    /// The client stopped sending its request body before it was whole.
    #[error("the request body stopped arriving before it was whole")]
    BodyStalled,
    /// A bound of this server is reached for now (too many followers); try again later.
    #[error("{0}")]
    TooBusy(String),
    /// The key (or the session) holds all that its quota allows; `message` names the quota.
    #[error("{message}")]
    QuotaExceeded { quota: super::Quota, max: u64, message: String },
    /// An `Idempotency-Key` already used for a different request (path or body).
    #[error("this Idempotency-Key was used for a different request")]
    IdempotencyKeyReused,
    /// The executor cannot take work now (circuit open, cluster unreachable); `retry_after`
    /// tells when trying again makes sense, if known.
    #[error("executor unavailable: {reason}")]
    ExecutorUnavailable { reason: String, retry_after: Option<std::time::Duration> },
    /// The database cannot be reached.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A command ran, but its record could not be stored (the database went down meanwhile);
    /// the record is kept and written once the database answers. Carries what the client
    /// would otherwise lose: the result.
    #[error("the command ran, but the database is unavailable to record it")]
    NotRecorded(Box<super::Execution>),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl DomainError {
    pub fn not_found(entity: &'static str, id: impl Into<String>) -> Self {
        Self::NotFound { entity, id: id.into() }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(FieldErrors::single(field, message))
    }

    pub fn executor_unavailable(reason: impl Into<String>) -> Self {
        Self::ExecutorUnavailable { reason: reason.into(), retry_after: None }
    }

    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        Self::Internal(error.into())
    }
}
