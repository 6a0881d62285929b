//! `IdempotencyStore` on SQL. A reservation is one upsert: two replicas inserting the same key
//! at once are serialised by the primary key, and only one gets its row back.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    dialect::{Db, Dialect, Stmt},
    errors::corrupt,
    values::Row,
};
use crate::{
    domain::{DomainError, KeyRecord, StoredReply},
    ports::IdempotencyStore,
};

pub(crate) struct SqlIdempotency<D: Dialect> {
    db: Db<D>,
}

impl<D: Dialect> SqlIdempotency<D> {
    pub(crate) fn new(db: Db<D>) -> Self {
        Self { db }
    }
}

/// Answers up to this size are stored as they are: deflating them saves nothing worth a CPU.
const DEFLATE_FROM: usize = 1024;

/// `body` deflated, when it is worth it.
fn deflate(body: &str) -> Option<Vec<u8>> {
    use std::io::Write as _;
    if body.len() < DEFLATE_FROM {
        return None;
    }
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(body.as_bytes()).ok()?;
    encoder.finish().ok().filter(|deflated| deflated.len() < body.len())
}

fn inflate(deflated: &[u8]) -> Result<String, DomainError> {
    use std::io::Read as _;
    let mut body = String::new();
    flate2::read::DeflateDecoder::new(deflated)
        .read_to_string(&mut body)
        .map_err(|_| corrupt("stored answer", "not DEFLATE of UTF-8"))?;
    Ok(body)
}

fn record_from_row(row: &impl Row) -> Result<KeyRecord, DomainError> {
    let status = row.int("status")?;
    let reply = match status {
        None => None,
        Some(status) => Some(StoredReply {
            status: u16::try_from(status).unwrap_or(500),
            location: row.get("location")?,
            body: match row.get::<Option<Vec<u8>>>("body_deflated")? {
                Some(deflated) => inflate(&deflated)?,
                None => row.get::<Option<String>>("body")?.unwrap_or_default(),
            },
        }),
    };
    Ok(KeyRecord { fingerprint: row.get("fingerprint")?, reply })
}

#[async_trait]
impl<D: Dialect> IdempotencyStore for SqlIdempotency<D> {
    async fn reserve(
        &self,
        owner: Uuid,
        key: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
        locked_until: DateTime<Utc>,
        forget_before: DateTime<Utc>,
    ) -> Result<Option<KeyRecord>, DomainError> {
        let taken = Stmt::<D>::new(
            "INSERT INTO idempotency_keys (api_key_id, key, fingerprint, created_at, locked_until)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (api_key_id, key) DO UPDATE
                SET fingerprint = excluded.fingerprint, created_at = excluded.created_at,
                    locked_until = excluded.locked_until, status = NULL, location = NULL, body = NULL,
                    body_deflated = NULL
              WHERE idempotency_keys.created_at < $6
                 OR (idempotency_keys.status IS NULL AND idempotency_keys.locked_until < excluded.created_at
                     AND idempotency_keys.fingerprint = excluded.fingerprint)
             RETURNING key",
        )
        .uuid(Some(owner))
        .value(key.to_owned())
        .value(fingerprint.to_owned())
        .time(Some(now))
        .time(Some(locked_until))
        .time(Some(forget_before))
        .fetch_optional(&self.db)
        .await?;
        if taken.is_some() {
            return Ok(None);
        }
        let existing = Stmt::<D>::new(
            "SELECT fingerprint, status, location, body, body_deflated FROM idempotency_keys
             WHERE api_key_id = $1 AND key = $2",
        )
        .uuid(Some(owner))
        .value(key.to_owned())
        .fetch_optional(&self.db)
        .await?;
        match existing {
            Some(row) => record_from_row(&row).map(Some),
            // Released between the two statements: as good as in flight; the client retries.
            None => Ok(Some(KeyRecord { fingerprint: fingerprint.to_owned(), reply: None })),
        }
    }

    async fn complete(&self, owner: Uuid, key: &str, reply: &StoredReply) -> Result<(), DomainError> {
        let (body, deflated) = match deflate(&reply.body) {
            Some(deflated) => (None, Some(deflated)),
            None => (Some(reply.body.clone()), None),
        };
        Stmt::<D>::new(
            "UPDATE idempotency_keys SET status = $3, location = $4, body = $5, body_deflated = $6
             WHERE api_key_id = $1 AND key = $2",
        )
        .uuid(Some(owner))
        .value(key.to_owned())
        .value(i32::from(reply.status))
        .value(reply.location.clone())
        .value(body)
        .value(deflated)
        .execute(&self.db)
        .await
        .map(drop)
    }

    async fn release(&self, owner: Uuid, key: &str) -> Result<(), DomainError> {
        Stmt::<D>::new("DELETE FROM idempotency_keys WHERE api_key_id = $1 AND key = $2 AND status IS NULL")
            .uuid(Some(owner))
            .value(key.to_owned())
            .execute(&self.db)
            .await
            .map(drop)
    }

    async fn purge(&self, before: DateTime<Utc>) -> Result<u64, DomainError> {
        Stmt::<D>::new("DELETE FROM idempotency_keys WHERE created_at < $1").time(Some(before)).execute(&self.db).await
    }
}
