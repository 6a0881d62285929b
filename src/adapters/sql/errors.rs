//! Database errors as domain errors, translated where they occur so no sqlx type crosses a port.

use crate::domain::DomainError;

/// A driver error: a unique violation is a `Conflict`, a database that cannot be reached (pool
/// timeout, I/O, TLS) is `Unavailable`, anything else `Internal`.
pub(crate) fn db_error(error: sqlx::Error) -> DomainError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => DomainError::Conflict("already exists".into()),
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
            DomainError::Unavailable(error.to_string())
        }
        _ => DomainError::internal(error),
    }
}

/// Decoding a stored value that our own code wrote; failure means a corrupt row.
pub(crate) fn corrupt(what: &str, error: impl std::fmt::Display) -> DomainError {
    DomainError::internal(anyhow::anyhow!("stored {what} is unreadable: {error}"))
}
