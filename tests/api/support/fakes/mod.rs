//! In-memory fakes of ports, for service tests: each keeps its state where a test can read it,
//! and signals every change, so a test awaits the state it expects instead of sleeping.
//!
//! `MemoryQueue` is held to the same contract as the SQL queues (`contracts::queue`); the
//! others are scripted stand-ins that do only what the services under test ask of them.

mod audit;
mod deliveries;
mod executor;
mod keys;
mod output;
mod queue;
mod sender;

pub use audit::MemoryAuditLog;
pub use deliveries::MemoryDeliveries;
pub use executor::{ExecEvent, ScriptedExecutor};
pub use keys::MemoryKeys;
pub use output::MemoryOutputLog;
pub use queue::MemoryQueue;
pub use sender::ScriptedSender;

use std::sync::Arc;

use async_trait::async_trait;
use rdev_api::{
    domain::{DomainError, ExecutorKind, Project, ProjectId, ProjectStatus},
    ports::ProjectSource,
};
use tokio::sync::watch;

/// A fixed set of local projects.
pub struct FixedProjects(pub Vec<Project>);

impl FixedProjects {
    pub fn named(ids: &[&str]) -> Arc<Self> {
        Arc::new(Self(ids.iter().map(|id| project(id)).collect()))
    }
}

pub fn project(id: &str) -> Project {
    Project {
        id: ProjectId::parse(id).expect("a project id"),
        name: id.into(),
        status: ProjectStatus::Running,
        executor: ExecutorKind::Local,
        namespace: None,
        pod: None,
        created_at: None,
        container: None,
    }
}

#[async_trait]
impl ProjectSource for FixedProjects {
    async fn list(&self) -> Result<Vec<Project>, DomainError> {
        Ok(self.0.clone())
    }

    async fn get(&self, id: &ProjectId) -> Result<Option<Project>, DomainError> {
        Ok(self.0.iter().find(|p| &p.id == id).cloned())
    }
}

/// State behind a lock, with a signal on every change: `wait_until` resolves once a predicate
/// holds (at once if it already does).
pub struct Watched<T> {
    state: std::sync::Mutex<T>,
    changes: watch::Sender<u64>,
}

impl<T: Default> Default for Watched<T> {
    fn default() -> Self {
        Self { state: Default::default(), changes: watch::Sender::new(0) }
    }
}

impl<T> Watched<T> {
    pub fn read<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        f(&self.state.lock().unwrap())
    }

    pub fn change<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let result = f(&mut self.state.lock().unwrap());
        self.changes.send_modify(|n| *n += 1);
        result
    }

    /// Waits (10 s at most, then fails the test) until `done` holds for the state.
    pub async fn wait_until(&self, what: &str, done: impl Fn(&T) -> bool) {
        let mut changes = self.changes.subscribe();
        let wait = changes.wait_for(|_| self.read(&done));
        tokio::time::timeout(std::time::Duration::from_secs(10), wait)
            .await
            .unwrap_or_else(|_| panic!("never happened: {what}"))
            .expect("the fake lives");
    }
}
