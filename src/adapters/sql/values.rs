//! How a value is stored: below the SQL text, the one place where the two databases differ.
//!
//! `Row` reads a column as a domain value (binding one is `dialect::Stmt`'s). Postgres stores
//! ids as `uuid`, times as `timestamptz`, lists as `text[]` and documents as `jsonb`; SQLite as
//! TEXT, INTEGER microseconds since the epoch (so ordering and ranges compare numbers), JSON
//! arrays and JSON text. With `Row` implemented for both, the code that maps an aggregate's
//! columns (`*_from_row`) is written once.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use sqlx::{Postgres, Row as _, Sqlite, TypeInfo as _, ValueRef as _, postgres::PgRow, sqlite::SqliteRow};
use uuid::Uuid;

use super::errors::{corrupt, db_error};
use crate::domain::DomainError;

/// A value both databases store the same way (text, integers, booleans, and their options),
/// as a parameter.
pub(crate) trait Plain:
    for<'a> sqlx::Encode<'a, Postgres> + sqlx::Type<Postgres> + for<'a> sqlx::Encode<'a, Sqlite> + sqlx::Type<Sqlite> + Send
{
}

impl<T> Plain for T where
    T: for<'a> sqlx::Encode<'a, Postgres>
        + sqlx::Type<Postgres>
        + for<'a> sqlx::Encode<'a, Sqlite>
        + sqlx::Type<Sqlite>
        + Send
{
}

/// The same, as a column read back (owned, so it outlives the row).
pub(crate) trait Stored:
    for<'r> sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres> + for<'r> sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>
{
}

impl<T> Stored for T where
    T: for<'r> sqlx::Decode<'r, Postgres>
        + sqlx::Type<Postgres>
        + for<'r> sqlx::Decode<'r, Sqlite>
        + sqlx::Type<Sqlite>
{
}

/// Reads the columns of one result row.
pub(crate) trait Row {
    /// Text, integers of the column's own width, booleans, and their options.
    fn get<T: Stored>(&self, column: &str) -> Result<T, DomainError>;
    /// An integer column of any width (Postgres' SMALLINT, INTEGER, BIGINT), widened.
    fn int(&self, column: &str) -> Result<Option<i64>, DomainError>;
    fn uuid(&self, column: &str) -> Result<Option<Uuid>, DomainError>;
    fn time(&self, column: &str) -> Result<Option<DateTime<Utc>>, DomainError>;
    /// A list of strings (`text[]`, or a JSON array).
    fn strings(&self, column: &str) -> Result<Vec<String>, DomainError>;
    /// A document (`jsonb`, or JSON text).
    fn json<T: DeserializeOwned>(&self, column: &str) -> Result<T, DomainError>;

    fn required_uuid(&self, column: &str) -> Result<Uuid, DomainError> {
        self.uuid(column)?.ok_or_else(|| corrupt(column, "NULL"))
    }

    fn required_time(&self, column: &str) -> Result<DateTime<Utc>, DomainError> {
        self.time(column)?.ok_or_else(|| corrupt(column, "NULL"))
    }

    fn required_int(&self, column: &str) -> Result<i64, DomainError> {
        self.int(column)?.ok_or_else(|| corrupt(column, "NULL"))
    }

    /// A count or size that our code stored, as an unsigned number (negatives are corrupt: 0).
    fn count(&self, column: &str) -> Result<u32, DomainError> {
        Ok(u32::try_from(self.required_int(column)?.max(0)).unwrap_or(u32::MAX))
    }
}

impl Row for PgRow {
    fn get<T: Stored>(&self, column: &str) -> Result<T, DomainError> {
        self.try_get(column).map_err(db_error)
    }

    fn int(&self, column: &str) -> Result<Option<i64>, DomainError> {
        let raw = self.try_get_raw(column).map_err(db_error)?;
        if raw.is_null() {
            return Ok(None);
        }
        let width = raw.type_info().name().to_owned();
        Ok(Some(match width.as_str() {
            "INT2" => i64::from(Row::get::<i16>(self, column)?),
            "INT4" => i64::from(Row::get::<i32>(self, column)?),
            _ => Row::get::<i64>(self, column)?,
        }))
    }

    fn uuid(&self, column: &str) -> Result<Option<Uuid>, DomainError> {
        self.try_get(column).map_err(db_error)
    }

    fn time(&self, column: &str) -> Result<Option<DateTime<Utc>>, DomainError> {
        self.try_get(column).map_err(db_error)
    }

    fn strings(&self, column: &str) -> Result<Vec<String>, DomainError> {
        self.try_get(column).map_err(db_error)
    }

    fn json<T: DeserializeOwned>(&self, column: &str) -> Result<T, DomainError> {
        let value: serde_json::Value = self.try_get(column).map_err(db_error)?;
        serde_json::from_value(value).map_err(|e| corrupt(column, e))
    }
}

impl Row for SqliteRow {
    fn get<T: Stored>(&self, column: &str) -> Result<T, DomainError> {
        self.try_get(column).map_err(db_error)
    }

    fn int(&self, column: &str) -> Result<Option<i64>, DomainError> {
        self.try_get(column).map_err(db_error)
    }

    fn uuid(&self, column: &str) -> Result<Option<Uuid>, DomainError> {
        let text: Option<String> = self.try_get(column).map_err(db_error)?;
        text.map(|t| Uuid::parse_str(&t).map_err(|e| corrupt(column, e))).transpose()
    }

    fn time(&self, column: &str) -> Result<Option<DateTime<Utc>>, DomainError> {
        let micros: Option<i64> = self.try_get(column).map_err(db_error)?;
        micros.map(|m| DateTime::from_timestamp_micros(m).ok_or_else(|| corrupt(column, m))).transpose()
    }

    fn strings(&self, column: &str) -> Result<Vec<String>, DomainError> {
        self.json(column)
    }

    fn json<T: DeserializeOwned>(&self, column: &str) -> Result<T, DomainError> {
        let text: String = self.try_get(column).map_err(db_error)?;
        serde_json::from_str(&text).map_err(|e| corrupt(column, e))
    }
}
