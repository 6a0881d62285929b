//! `ProjectSource` over a watch of the labelled pods: an index in memory, kept current by
//! kube-rs's `watcher` (list, then watch with bookmarks; a `410 Gone` lists again; errors back
//! off and retry), so `GET /projects` and every lookup cost no Kubernetes API call. While the
//! watch reconnects, the last known pods are served, and `/ready` and `kube_watch_state` say so.
//! A relist is staged aside and swapped in whole at its end, so a lookup never sees half a list.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{
        Arc, RwLock,
        atomic::{AtomicU8, Ordering},
    },
};

use async_trait::async_trait;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    runtime::{WatchStreamExt, watcher},
};
use tokio::sync::watch;

use super::{PROJECT_LABEL, projects::project_of};
use crate::{
    domain::{DomainError, Project, ProjectId},
    ports::{HealthCheck, ProjectSource},
    telemetry::metrics::{KUBE_WATCH_EVENTS_TOTAL, KUBE_WATCH_STATE},
};

/// `kube_watch_state`: the first list has not finished.
const LISTING: u8 = 0;
const WATCHING: u8 = 1;
/// An error ended the watch; it retries with backoff, serving the last known pods.
const RECONNECTING: u8 = 2;
/// How long a lookup waits for the first list before answering 503.
const FIRST_LIST_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The pods that stand for projects, by pod name and by project id.
#[derive(Default)]
struct Index {
    pods: HashMap<String, (u8, Project)>,
    by_id: HashMap<ProjectId, BTreeSet<String>>,
}

impl Index {
    fn apply(&mut self, pod: &Pod, namespace: &str) {
        let Some(name) = pod.metadata.name.clone() else { return };
        self.delete(&name);
        if let Some((rank, project)) = project_of(pod, namespace) {
            self.by_id.entry(project.id.clone()).or_default().insert(name.clone());
            self.pods.insert(name, (rank, project));
        }
    }

    fn delete(&mut self, name: &str) {
        if let Some((_, project)) = self.pods.remove(name)
            && let Some(names) = self.by_id.get_mut(&project.id)
        {
            names.remove(name);
            if names.is_empty() {
                self.by_id.remove(&project.id);
            }
        }
    }

    /// The best pod of a project: Running and Ready first, then the newest.
    fn best(&self, id: &ProjectId) -> Option<Project> {
        let names = self.by_id.get(id)?;
        names
            .iter()
            .filter_map(|name| self.pods.get(name))
            .max_by(|(a_rank, a), (b_rank, b)| (a_rank, a.created_at).cmp(&(b_rank, b.created_at)))
            .map(|(_, project)| project.clone())
    }
}

pub struct WatchedProjects {
    index: Arc<RwLock<Index>>,
    state: Arc<AtomicU8>,
    /// Set once the first list is in.
    listed: watch::Receiver<bool>,
    _task: AbortOnDrop,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl WatchedProjects {
    /// Starts watching the pods labelled `rdev.orchard9.ai/project=true` in `namespace`.
    pub fn start(client: kube::Client, namespace: &str) -> Arc<Self> {
        let pods: Api<Pod> = Api::namespaced(client, namespace);
        let index = Arc::new(RwLock::new(Index::default()));
        let state = Arc::new(AtomicU8::new(LISTING));
        let (listed_tx, listed) = watch::channel(false);
        metrics::gauge!(KUBE_WATCH_STATE).set(f64::from(LISTING));
        let task = {
            let (index, state, namespace) = (index.clone(), state.clone(), namespace.to_owned());
            let config = watcher::Config::default().labels(&format!("{PROJECT_LABEL}=true"));
            let events = watcher(pods, config).default_backoff();
            tokio::spawn(async move {
                let mut staged: Option<Index> = None;
                tokio::pin!(events);
                while let Some(event) = events.next().await {
                    let label = match event {
                        Ok(event) => {
                            let label = event_label(&event);
                            let listed_now = matches!(event, watcher::Event::InitDone);
                            apply(&index, &mut staged, &namespace, event, &listed_tx);
                            // Watching once the first list is in, and again after each error.
                            if listed_now || state.load(Ordering::Acquire) != LISTING {
                                set_state(&state, WATCHING);
                            }
                            label
                        }
                        Err(error) => {
                            tracing::warn!(%error, "pod watch failed; retrying, serving the last known pods");
                            set_state(&state, RECONNECTING);
                            "error"
                        }
                    };
                    metrics::counter!(KUBE_WATCH_EVENTS_TOTAL, "type" => label).increment(1);
                }
            })
        };
        Arc::new(Self { index, state, listed, _task: AbortOnDrop(task) })
    }

    /// The index, once the first list is in: a lookup before it waits for it (a while at most)
    /// rather than answer from an empty index.
    async fn read(&self) -> Result<std::sync::RwLockReadGuard<'_, Index>, DomainError> {
        if !*self.listed.borrow() {
            let mut listed = self.listed.clone();
            let first = tokio::time::timeout(FIRST_LIST_WAIT, listed.wait_for(|listed| *listed)).await;
            if !matches!(first, Ok(Ok(_))) {
                return Err(DomainError::executor_unavailable("the first list of pods has not arrived yet"));
            }
        }
        Ok(self.index.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }
}

fn set_state(state: &AtomicU8, value: u8) {
    if state.swap(value, Ordering::AcqRel) != value {
        metrics::gauge!(KUBE_WATCH_STATE).set(f64::from(value));
    }
}

/// The `type` label of `kube_watch_events_total`.
fn event_label(event: &watcher::Event<Pod>) -> &'static str {
    match event {
        watcher::Event::Apply(_) => "apply",
        watcher::Event::Delete(_) => "delete",
        watcher::Event::Init | watcher::Event::InitApply(_) | watcher::Event::InitDone => "relist",
    }
}

/// One watcher event into the index: a relist (`Init` … `InitDone`) is staged and swapped in
/// at its end; other events apply at once.
fn apply(
    index: &RwLock<Index>,
    staged: &mut Option<Index>,
    namespace: &str,
    event: watcher::Event<Pod>,
    listed: &watch::Sender<bool>,
) {
    let live = || index.write().unwrap_or_else(|poisoned| poisoned.into_inner());
    match event {
        watcher::Event::Init => *staged = Some(Index::default()),
        watcher::Event::InitApply(pod) => staged.get_or_insert_with(Index::default).apply(&pod, namespace),
        watcher::Event::InitDone => {
            *live() = staged.take().unwrap_or_default();
            listed.send_replace(true);
        }
        watcher::Event::Apply(pod) => live().apply(&pod, namespace),
        watcher::Event::Delete(pod) => {
            if let Some(name) = &pod.metadata.name {
                live().delete(name);
            }
        }
    }
}

#[async_trait]
impl ProjectSource for WatchedProjects {
    async fn list(&self) -> Result<Vec<Project>, DomainError> {
        let index = self.read().await?;
        let mut projects: Vec<Project> = index.by_id.keys().filter_map(|id| index.best(id)).collect();
        projects.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(projects)
    }

    async fn get(&self, id: &ProjectId) -> Result<Option<Project>, DomainError> {
        Ok(self.read().await?.best(id))
    }
}

/// `checks.projects` of `/ready`: not ready until the first list is in; then ready, and saying
/// so when the watch is reconnecting.
pub struct WatchHealth(pub Arc<WatchedProjects>);

#[async_trait]
impl HealthCheck for WatchHealth {
    fn name(&self) -> &'static str {
        "projects"
    }

    async fn check(&self) -> Result<String, String> {
        if !*self.0.listed.borrow() {
            return Err("waiting for the first list of pods".into());
        }
        Ok(match self.0.state.load(Ordering::Acquire) {
            RECONNECTING => "stale: the pod watch is reconnecting; serving the last known pods".into(),
            _ => "ok".into(),
        })
    }
}
