//! `TicketStore` on SQL: a ticket is taken with one `DELETE … RETURNING`, so of two replicas
//! given the same ticket at once only one gets it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    dialect::{Db, Dialect, Stmt},
    errors::corrupt,
    values::Row,
};
use crate::{
    domain::{DomainError, ProjectId, StoredTicket},
    ports::TicketStore,
};

pub(crate) struct SqlTickets<D: Dialect> {
    db: Db<D>,
}

impl<D: Dialect> SqlTickets<D> {
    pub(crate) fn new(db: Db<D>) -> Self {
        Self { db }
    }
}

fn ticket_from_row(row: &impl Row) -> Result<StoredTicket, DomainError> {
    let project: String = row.get("project_id")?;
    Ok(StoredTicket {
        hash: row.get("hash")?,
        api_key_id: row.required_uuid("api_key_id")?,
        project_id: ProjectId::parse(&project).map_err(|e| corrupt("project_id", e))?,
        expires_at: row.required_time("expires_at")?,
    })
}

#[async_trait]
impl<D: Dialect> TicketStore for SqlTickets<D> {
    async fn insert(&self, ticket: &StoredTicket) -> Result<(), DomainError> {
        Stmt::<D>::new(
            "INSERT INTO terminal_tickets (hash, api_key_id, project_id, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .value(ticket.hash.clone())
        .uuid(Some(ticket.api_key_id))
        .value(ticket.project_id.as_str().to_owned())
        .time(Some(ticket.expires_at))
        .execute(&self.db)
        .await
        .map(drop)
    }

    async fn take(&self, hash: &str, now: DateTime<Utc>) -> Result<Option<StoredTicket>, DomainError> {
        let row = Stmt::<D>::new(
            "DELETE FROM terminal_tickets WHERE hash = $1 RETURNING hash, api_key_id, project_id, expires_at",
        )
        .value(hash.to_owned())
        .fetch_optional(&self.db)
        .await?;
        // An expired ticket is deleted as well: it can never be used, so it need not wait for
        // the purge.
        Ok(row.as_ref().map(ticket_from_row).transpose()?.filter(|ticket| ticket.expires_at > now))
    }

    async fn purge(&self, now: DateTime<Utc>) -> Result<u64, DomainError> {
        Stmt::<D>::new("DELETE FROM terminal_tickets WHERE expires_at <= $1").time(Some(now)).execute(&self.db).await
    }
}
