//! `SessionStore` on SQL. The lease is one conditional update: two replicas starting a command
//! in one session at once are serialised by the row, and only one gets it back.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    dialect::{Db, Dialect, Stmt, Tx},
    errors::corrupt,
    values::Row,
};
use crate::{
    domain::{DomainError, Page, PageRequest, ProjectId, Session, SessionEnd, SessionFilter},
    ports::{Acquired, SessionStore},
};

const COLUMNS: &str = "id, project_id, api_key_id, workdir, env, created_at, last_used_at, expires_at";

pub(crate) struct SqlSessions<D: Dialect> {
    db: Db<D>,
}

impl<D: Dialect> SqlSessions<D> {
    pub(crate) fn new(db: Db<D>) -> Self {
        Self { db }
    }
}

fn session_from_row(row: &impl Row) -> Result<Session, DomainError> {
    let project: String = row.get("project_id")?;
    Ok(Session {
        id: row.required_uuid("id")?,
        project_id: ProjectId::parse(&project).map_err(|e| corrupt("project_id", e))?,
        api_key_id: row.uuid("api_key_id")?,
        workdir: row.get("workdir")?,
        env: row.json::<BTreeMap<String, String>>("env")?,
        created_at: row.required_time("created_at")?,
        last_used_at: row.required_time("last_used_at")?,
        expires_at: row.required_time("expires_at")?,
    })
}

/// Stores a session command's end: the session's next state, and the lease given back, if
/// that command still holds it (in the transaction that stores the command's end).
pub(super) async fn end_session<D: Dialect>(tx: &mut Tx<D>, end: &SessionEnd) -> Result<(), DomainError> {
    Stmt::<D>::new(
        "UPDATE sessions SET workdir = $2, env = $3, last_used_at = $4, expires_at = $5,
                running_command_id = NULL, lease_until = NULL
         WHERE id = $1 AND running_command_id = $6",
    )
    .uuid(Some(end.session_id))
    .value(end.state.workdir.clone())
    .json(&end.state.env)
    .time(Some(end.used_at))
    .time(Some(end.expires_at))
    .uuid(Some(end.command_id))
    .execute(tx)
    .await
    .map(drop)
}

#[async_trait]
impl<D: Dialect> SessionStore for SqlSessions<D> {
    async fn create(&self, session: &Session, most_of_key: u32) -> Result<bool, DomainError> {
        let sql = format!(
            "INSERT INTO sessions ({COLUMNS}) SELECT $1, $2, $3, $4, $5, $6, $7, $8
             WHERE (SELECT count(*) FROM sessions WHERE api_key_id = $3 AND expires_at > $6) < $9"
        );
        Stmt::<D>::new(sql)
            .uuid(Some(session.id))
            .value(session.project_id.as_str().to_owned())
            .uuid(session.api_key_id)
            .value(session.workdir.clone())
            .json(&session.env)
            .time(Some(session.created_at))
            .time(Some(session.last_used_at))
            .time(Some(session.expires_at))
            .value(i64::from(most_of_key))
            .execute(&self.db)
            .await
            .map(|stored| stored == 1)
    }

    async fn get(&self, id: Uuid, now: DateTime<Utc>) -> Result<Option<Session>, DomainError> {
        let row = Stmt::<D>::new(format!("SELECT {COLUMNS} FROM sessions WHERE id = $1 AND expires_at > $2"))
            .uuid(Some(id))
            .time(Some(now))
            .fetch_optional(&self.db)
            .await?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn list(
        &self,
        filter: &SessionFilter,
        page: &PageRequest,
        now: DateTime<Utc>,
    ) -> Result<Page<Session>, DomainError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM sessions
             WHERE expires_at > $1
               AND ($2 IS NULL OR project_id = $2)
               AND ($3 IS NULL OR api_key_id = $3)
               AND ($4 IS NULL OR (created_at, id) < (SELECT created_at, id FROM sessions WHERE id = $4))
             ORDER BY created_at DESC, id DESC LIMIT $5"
        );
        let sessions = Stmt::<D>::new(sql)
            .time(Some(now))
            .value(filter.project_id.as_ref().map(|p| p.as_str().to_owned()))
            .uuid(filter.api_key_id)
            .page(page)
            .fetch_mapped(&self.db, session_from_row)
            .await?;
        Ok(Page::from_rows(sessions, page, |session| session.id))
    }

    async fn delete(&self, id: Uuid, now: DateTime<Utc>) -> Result<bool, DomainError> {
        let deleted = Stmt::<D>::new("DELETE FROM sessions WHERE id = $1 AND expires_at > $2")
            .uuid(Some(id))
            .time(Some(now))
            .execute(&self.db)
            .await?;
        Ok(deleted > 0)
    }

    async fn acquire(
        &self,
        id: Uuid,
        command_id: Uuid,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Acquired, DomainError> {
        let taken = Stmt::<D>::new(format!(
            "UPDATE sessions SET running_command_id = $2, lease_until = $4
             WHERE id = $1 AND expires_at > $3 AND (running_command_id IS NULL OR lease_until < $3)
             RETURNING {COLUMNS}"
        ))
        .uuid(Some(id))
        .uuid(Some(command_id))
        .time(Some(now))
        .time(Some(lease_until))
        .fetch_optional(&self.db)
        .await?;
        if let Some(row) = taken {
            return Ok(Acquired::Taken(session_from_row(&row)?));
        }
        Ok(match self.get(id, now).await? {
            Some(_) => Acquired::Busy,
            None => Acquired::Missing,
        })
    }

    async fn release(&self, id: Uuid, command_id: Uuid) -> Result<(), DomainError> {
        Stmt::<D>::new(
            "UPDATE sessions SET running_command_id = NULL, lease_until = NULL
             WHERE id = $1 AND running_command_id = $2",
        )
        .uuid(Some(id))
        .uuid(Some(command_id))
        .execute(&self.db)
        .await
        .map(drop)
    }

    async fn purge(&self, now: DateTime<Utc>) -> Result<u64, DomainError> {
        Stmt::<D>::new(
            "DELETE FROM sessions WHERE expires_at <= $1 AND (running_command_id IS NULL OR lease_until < $1)",
        )
        .time(Some(now))
        .execute(&self.db)
        .await
    }
}
