//! Sessions: create, read, list and end them, and prepare a command to run in one.
//!
//! A session belongs to the key that created it: other keys see none of it (404), except keys
//! with `admin`. Its command is an ordinary command run now (origin `session`), started in the
//! session's folder with its variables (the request's `env` and `workdir` on top, for that
//! command only), holding the session's lease while it runs.

use std::{sync::Arc, time::Duration};

use uuid::Uuid;

use super::{CommandService, PreparedShell, ProjectService, commands::SessionRun};
use crate::{
    domain::{
        Caller, CreateSessionRequest, DomainError, Page, PageRequest, ProjectId, Quota, Quotas, Session, SessionFilter,
        SessionState, ShellRequest,
    },
    ports::{Acquired, Clock, SessionStore},
};

/// Whose sessions a caller may see: one key's, or (`admin`) everyone's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Key(Option<Uuid>),
    Anyone,
}

impl Owner {
    fn may_see(self, session: &Session) -> bool {
        match self {
            Owner::Anyone => true,
            Owner::Key(key) => session.api_key_id == key,
        }
    }

    fn filter(self) -> Option<Uuid> {
        match self {
            Owner::Anyone => None,
            Owner::Key(key) => key,
        }
    }
}

pub struct SessionService {
    store: Arc<dyn SessionStore>,
    projects: Arc<ProjectService>,
    commands: Arc<CommandService>,
    clock: Arc<dyn Clock>,
    idle: chrono::Duration,
}

fn not_found(id: Uuid) -> DomainError {
    DomainError::not_found("session", id.to_string())
}

impl SessionService {
    pub fn new(
        store: Arc<dyn SessionStore>,
        projects: Arc<ProjectService>,
        commands: Arc<CommandService>,
        clock: Arc<dyn Clock>,
        idle: Duration,
    ) -> Self {
        let idle = chrono::Duration::from_std(idle).unwrap_or(chrono::Duration::hours(1));
        Self { store, projects, commands, clock, idle }
    }

    /// A new session in the project, its workdir checked where commands run, if the caller's
    /// key has fewer than its `sessions` quota live.
    pub async fn create(
        &self,
        caller: &Caller,
        project_id: &ProjectId,
        request: CreateSessionRequest,
        quotas: Quotas,
    ) -> Result<Session, DomainError> {
        let state = SessionState::from_request(request)?;
        if state.workdir.is_some() {
            let probe =
                ShellRequest { command: "true".into(), workdir: state.workdir.clone(), ..ShellRequest::default() };
            let prepared = self.commands.prepare(project_id, probe).await?;
            self.commands.check(&prepared).await?;
        } else {
            self.projects.get(project_id).await?;
        }
        let now = self.clock.now();
        let session = Session {
            id: Uuid::new_v4(),
            project_id: project_id.clone(),
            workdir: state.workdir,
            env: state.env,
            created_at: now,
            last_used_at: now,
            expires_at: now + self.idle,
            api_key_id: caller.api_key_id,
        };
        if !self.store.create(&session, quotas.sessions).await? {
            return Err(Quota::Sessions.exceeded(quotas.sessions.into()));
        }
        Ok(session)
    }

    pub async fn get(&self, id: Uuid, owner: Owner) -> Result<Session, DomainError> {
        let session = self.store.get(id, self.clock.now()).await?.ok_or_else(|| not_found(id))?;
        if owner.may_see(&session) { Ok(session) } else { Err(not_found(id)) }
    }

    pub async fn list(
        &self,
        project_id: Option<ProjectId>,
        owner: Owner,
        page: &PageRequest,
    ) -> Result<Page<Session>, DomainError> {
        let filter = SessionFilter { project_id, api_key_id: owner.filter() };
        if matches!(owner, Owner::Key(None)) {
            return Ok(Page { items: Vec::new(), next_cursor: None });
        }
        self.store.list(&filter, page, self.clock.now()).await
    }

    /// Ends a session. A command running in it goes on to its end; the session is gone.
    pub async fn delete(&self, id: Uuid, owner: Owner) -> Result<(), DomainError> {
        self.get(id, owner).await?;
        if self.store.delete(id, self.clock.now()).await? { Ok(()) } else { Err(not_found(id)) }
    }

    /// A command to run in the session, validated (not started, the session not taken yet):
    /// it starts in the session's folder with its variables, the request's on top.
    pub async fn prepare_shell(
        &self,
        id: Uuid,
        owner: Owner,
        mut request: ShellRequest,
        stream: bool,
    ) -> Result<PreparedShell, DomainError> {
        let session = self.get(id, owner).await?;
        let workdir_override = request.workdir.as_deref().is_some_and(|w| !w.is_empty());
        if !workdir_override {
            request.workdir = session.workdir.clone();
        }
        // The request's variables on top of the session's; `prepare` checks them together.
        let mut env = session.env.clone();
        env.extend(request.env.take().unwrap_or_default());
        request.env = Some(env);
        let prepared = if stream {
            self.commands.prepare_stream(&session.project_id, request).await?
        } else {
            self.commands.prepare(&session.project_id, request).await?
        };
        Ok(prepared.in_session(SessionRun { session, idle: self.idle, workdir_override }))
    }

    /// Takes the session for a prepared command: 409 while another command runs in it.
    pub async fn take(&self, id: Uuid, prepared: &PreparedShell) -> Result<(), DomainError> {
        let now = self.clock.now();
        let hold = chrono::Duration::from_std(prepared.timeout() + self.commands.lease_past_timeout())
            .unwrap_or(chrono::Duration::hours(2));
        match self.store.acquire(id, prepared.id(), now, now + hold).await? {
            Acquired::Taken(_) => Ok(()),
            Acquired::Busy => Err(DomainError::Conflict("another command is running in this session".into())),
            Acquired::Missing => Err(not_found(id)),
        }
    }

    /// Deletes the sessions that expired. Returns how many.
    pub async fn purge_expired(&self) -> Result<u64, DomainError> {
        self.store.purge(self.clock.now()).await
    }
}
