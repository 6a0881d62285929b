//! Database errors as domain errors, translated where they occur so no sqlx type crosses a port,
//! and which of them mean the database is down (`classify`, for `health`).

use crate::domain::DomainError;

/// What a failed statement says about the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// It cannot be reached: the connection broke or was refused, the server is shutting
    /// down, the file is locked by another process or unreadable.
    Outage,
    /// Maybe: no connection came in time, which a busy pool explains as well as a dead server.
    Suspect,
    /// The statement's own fault (a constraint, a bad value).
    Other,
}

/// SQLite's primary result codes that mean the file cannot be used now: BUSY and LOCKED (another
/// process holds the write lock; this process has a single connection, so never itself),
/// READONLY, IOERR, FULL, CANTOPEN.
const SQLITE_OUTAGE_CODES: [i64; 6] = [5, 6, 8, 10, 13, 14];

pub(crate) fn classify(error: &sqlx::Error) -> Failure {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::PoolClosed
        | sqlx::Error::BeginFailed => Failure::Outage,
        sqlx::Error::PoolTimedOut => Failure::Suspect,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            let outage = if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // Extended codes carry the primary one in their low byte.
                code.parse::<i64>().is_ok_and(|code| SQLITE_OUTAGE_CODES.contains(&(code & 0xff)))
            } else {
                // Postgres: connection exceptions, and the server shutting down or starting.
                code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03")
            };
            if outage { Failure::Outage } else { Failure::Other }
        }
        _ => Failure::Other,
    }
}

/// A driver error: a unique violation is a `Conflict`, a database that cannot be reached (or
/// gave no connection in time) is `Unavailable`, anything else `Internal`.
pub(crate) fn db_error(error: sqlx::Error) -> DomainError {
    match (&error, classify(&error)) {
        (sqlx::Error::Database(db), _) if db.is_unique_violation() => DomainError::Conflict("already exists".into()),
        (_, Failure::Outage | Failure::Suspect) => DomainError::Unavailable(error.to_string()),
        _ => DomainError::internal(error),
    }
}

/// Decoding a stored value that our own code wrote; failure means a corrupt row.
pub(crate) fn corrupt(what: &str, error: impl std::fmt::Display) -> DomainError {
    DomainError::internal(anyhow::anyhow!("stored {what} is unreadable: {error}"))
}
