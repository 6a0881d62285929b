//! Keyset pagination shared by every list: `limit` items after an opaque `cursor`, which is the
//! id of the last item of the previous page. Stable under concurrent inserts, unlike offsets.

use serde::Serialize;

use super::DomainError;

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: u32,
    pub after: Option<uuid::Uuid>,
}

impl PageRequest {
    /// Validates the raw query values: `limit` in 1..=500 (default 50), `cursor` a UUID.
    pub fn parse(limit: Option<u32>, cursor: Option<&str>) -> Result<Self, DomainError> {
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(DomainError::invalid("limit", format!("must be between 1 and {MAX_LIMIT}")));
        }
        let after = match cursor {
            None | Some("") => None,
            Some(raw) => Some(
                uuid::Uuid::parse_str(raw)
                    .map_err(|_| DomainError::invalid("cursor", "is not a cursor this API returned"))?,
            ),
        };
        Ok(Self { limit, after })
    }

    /// One more row than asked for tells whether another page exists without a count query.
    pub fn fetch_limit(&self) -> i64 {
        i64::from(self.limit) + 1
    }
}

impl Default for PageRequest {
    fn default() -> Self {
        Self { limit: DEFAULT_LIMIT, after: None }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows fetched in order; `id` names each row's cursor.
    pub fn from_rows(mut rows: Vec<T>, request: &PageRequest, id: impl Fn(&T) -> uuid::Uuid) -> Self {
        let limit = request.limit as usize;
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|row| id(row).to_string())
        } else {
            None
        };
        Self { items: rows, next_cursor }
    }
}
