//! Owns the in-memory pods: the [`PodSpec`] builder tests describe pods with, the store that
//! keeps them per namespace with a folder each, and their rendering as Kubernetes `v1` JSON.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::selector::Selector;

/// What a fake pod looks like. Build one with [`PodSpec::new`] and the chained setters; it also
/// (de)serializes as the JSON body of the control API's `POST /_fake/pods`.
///
/// Defaults: phase `Running`, ready, and, when no container is named, one container `main`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Container names, in order; exec's `container=` must name one of them.
    pub containers: Vec<String>,
    /// `status.phase`: `Running`, `Pending`, `Succeeded`, `Failed` or `Unknown`.
    pub phase: String,
    /// The pod's `Ready` condition (and every container's `ready`).
    pub ready: bool,
}

impl Default for PodSpec {
    fn default() -> Self {
        Self {
            namespace: "default".to_owned(),
            name: String::new(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            containers: Vec::new(),
            phase: "Running".to_owned(),
            ready: true,
        }
    }
}

impl PodSpec {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), name: name.into(), ..Self::default() }
    }

    #[must_use]
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    #[must_use]
    pub fn annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    #[must_use]
    pub fn container(mut self, name: impl Into<String>) -> Self {
        self.containers.push(name.into());
        self
    }

    #[must_use]
    pub fn phase(mut self, phase: impl Into<String>) -> Self {
        self.phase = phase.into();
        self
    }

    #[must_use]
    pub fn ready(mut self, ready: bool) -> Self {
        self.ready = ready;
        self
    }

    /// The container names exec accepts: the named ones, or the implicit `main`.
    pub(crate) fn container_names(&self) -> Vec<String> {
        if self.containers.is_empty() { vec!["main".to_owned()] } else { self.containers.clone() }
    }
}

/// A pod as stored: its spec plus what the "cluster" assigned to it.
#[derive(Clone)]
struct StoredPod {
    spec: PodSpec,
    uid: String,
    created: String,
    resource_version: u64,
    dir: PathBuf,
}

#[derive(Default)]
struct Inner {
    pods: BTreeMap<(String, String), StoredPod>,
    /// Bumped on every change, like etcd's revision, so lists and objects carry a real one.
    resource_version: u64,
    /// The latest changes, for watches: a watch may resume after any version still here.
    history: VecDeque<Change>,
    /// Versions up to this one are gone from the history: resuming from before it is `410 Gone`.
    compacted: u64,
}

/// One change of one pod: what it was before and after (`None`: did not exist).
struct Change {
    resource_version: u64,
    before: Option<StoredPod>,
    after: Option<StoredPod>,
}

/// How many changes a watch can resume across, like the API server's watch cache.
const HISTORY: usize = 20_000;

/// A watch event as the API server sends it: `{"type": …, "object": …}`.
pub(crate) type WatchEvent = Value;

/// Why a watch cannot resume from the version it asked for.
pub(crate) struct Expired {
    pub(crate) oldest: u64,
}

/// Every pod of the fake cluster, with the temporary folder that holds each pod's working folder.
pub(crate) struct PodStore {
    root: TempDir,
    inner: Mutex<Inner>,
    /// The current version, for watches to wait on.
    changed: tokio::sync::watch::Sender<u64>,
}

impl PodStore {
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Self {
            root: tempfile::Builder::new().prefix("fake-kube-").tempdir()?,
            inner: Mutex::default(),
            changed: tokio::sync::watch::Sender::new(0),
        })
    }

    /// Resolves on the next change.
    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn record(&self, inner: &mut Inner, before: Option<StoredPod>, after: Option<StoredPod>) {
        let resource_version = inner.resource_version;
        inner.history.push_back(Change { resource_version, before, after });
        while inner.history.len() > HISTORY {
            if let Some(dropped) = inner.history.pop_front() {
                inner.compacted = dropped.resource_version;
            }
        }
        self.changed.send_replace(resource_version);
    }

    /// Forgets the history (as an API server's watch cache does after a restart or compaction):
    /// a watch that resumes from a version of before now gets `410 Gone`.
    pub(crate) fn compact(&self) {
        let mut inner = self.lock();
        inner.history.clear();
        inner.compacted = inner.resource_version;
    }

    /// The current version, and `ADDED` events for every pod that matches: a watch that did not
    /// ask for a version starts with them.
    pub(crate) fn current(&self, namespace: Option<&str>, selector: &Selector) -> (u64, Vec<WatchEvent>) {
        let inner = self.lock();
        let events = inner
            .pods
            .values()
            .filter(|pod| namespace.is_none_or(|ns| pod.spec.namespace == ns) && selector.matches(&pod.spec.labels))
            .map(|pod| event("ADDED", pod_json(pod)))
            .collect();
        (inner.resource_version, events)
    }

    /// The events a watch of `namespace` and `selector` sees after version `after`, and the
    /// version it has then seen up to. A pod that starts or stops matching the selector is
    /// `ADDED` or `DELETED`, as the API server's watch reports it.
    pub(crate) fn changes_since(
        &self,
        after: u64,
        namespace: Option<&str>,
        selector: &Selector,
    ) -> Result<(u64, Vec<WatchEvent>), Expired> {
        let inner = self.lock();
        if after < inner.compacted {
            return Err(Expired { oldest: inner.compacted });
        }
        fn seen<'p>(pod: &'p Option<StoredPod>, namespace: Option<&str>, selector: &Selector) -> Option<&'p StoredPod> {
            pod.as_ref()
                .filter(|p| namespace.is_none_or(|ns| p.spec.namespace == ns) && selector.matches(&p.spec.labels))
        }
        let events = inner
            .history
            .iter()
            .filter(|change| change.resource_version > after)
            .filter_map(|change| {
                match (seen(&change.before, namespace, selector), seen(&change.after, namespace, selector)) {
                    (None, Some(now)) => Some(event("ADDED", pod_json(now))),
                    (Some(_), Some(now)) => Some(event("MODIFIED", pod_json(now))),
                    (Some(was), None) => {
                        let mut last = was.clone();
                        last.resource_version = change.resource_version;
                        Some(event("DELETED", pod_json(&last)))
                    }
                    (None, None) => None,
                }
            })
            .collect();
        Ok((inner.resource_version, events))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking test thread must not wedge the server for the remaining requests.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds the pod, or replaces the one with the same namespace and name (keeping its folder
    /// and uid, as a status update would). Returns the pod's folder.
    pub(crate) fn add(&self, spec: PodSpec) -> io::Result<PathBuf> {
        check_name("namespace", &spec.namespace)?;
        check_name("pod name", &spec.name)?;
        let dir = self.root.path().join(&spec.namespace).join(&spec.name);
        std::fs::create_dir_all(&dir)?;
        let mut inner = self.lock();
        inner.resource_version += 1;
        let resource_version = inner.resource_version;
        let key = (spec.namespace.clone(), spec.name.clone());
        let before = inner.pods.get(&key).cloned();
        let (uid, created) = match &before {
            Some(old) => (old.uid.clone(), old.created.clone()),
            None => (new_uid(resource_version), rfc3339(SystemTime::now())),
        };
        let pod = StoredPod { spec, uid, created, resource_version, dir: dir.clone() };
        inner.pods.insert(key, pod.clone());
        self.record(&mut inner, before, Some(pod));
        Ok(dir)
    }

    /// Removes the pod and its folder; false when there was no such pod.
    pub(crate) fn remove(&self, namespace: &str, name: &str) -> bool {
        let removed = {
            let mut inner = self.lock();
            let removed = inner.pods.remove(&(namespace.to_owned(), name.to_owned()));
            if removed.is_some() {
                inner.resource_version += 1;
                self.record(&mut inner, removed.clone(), None);
            }
            removed
        };
        match removed {
            Some(pod) => {
                // Best effort: a command still running there may be writing into it.
                let _ = std::fs::remove_dir_all(&pod.dir);
                true
            }
            None => false,
        }
    }

    /// The pod's spec and folder, for exec and for the control API.
    pub(crate) fn find(&self, namespace: &str, name: &str) -> Option<(PodSpec, PathBuf)> {
        let inner = self.lock();
        inner.pods.get(&(namespace.to_owned(), name.to_owned())).map(|pod| (pod.spec.clone(), pod.dir.clone()))
    }

    /// Every pod's spec and folder, ordered by namespace then name.
    pub(crate) fn all(&self) -> Vec<(PodSpec, PathBuf)> {
        self.lock().pods.values().map(|pod| (pod.spec.clone(), pod.dir.clone())).collect()
    }

    /// `GET .../pods/{name}`: the `Pod` object, or `None` for a 404.
    pub(crate) fn get_json(&self, namespace: &str, name: &str) -> Option<Value> {
        let inner = self.lock();
        inner.pods.get(&(namespace.to_owned(), name.to_owned())).map(|pod| {
            let mut object = pod_json(pod);
            object["apiVersion"] = json!("v1");
            object["kind"] = json!("Pod");
            object
        })
    }

    /// `GET .../pods`: a `PodList` of the pods in `namespace` (all when `None`) that match.
    /// One page of the pods that match, as the API server pages a list (`limit`, `continue`):
    /// `page.limit` pods after `page.after`, with a `continue` token when more remain. Every page
    /// carries the version of the first one, so a watch from it replays what changed meanwhile.
    /// (The real server serves later pages from a snapshot at that version; here they come from
    /// the current pods, which a watch that follows from that version makes good.)
    pub(crate) fn list_json(&self, namespace: Option<&str>, selector: &Selector, page: &Page) -> Value {
        let inner = self.lock();
        let version = page.version.unwrap_or(inner.resource_version);
        let mut matching = inner
            .pods
            .range((page.after.clone().map_or(Bound::Unbounded, Bound::Excluded), Bound::Unbounded))
            .filter(|(_, pod)| namespace.is_none_or(|ns| pod.spec.namespace == ns))
            .filter(|(_, pod)| selector.matches(&pod.spec.labels));
        let limit = page.limit.unwrap_or(usize::MAX);
        let (mut items, mut last) = (Vec::new(), None);
        for (key, pod) in matching.by_ref().take(limit) {
            items.push(pod_json(pod));
            last = Some(key);
        }
        let remaining = matching.count();
        let mut metadata = json!({ "resourceVersion": version.to_string() });
        if remaining > 0
            && let Some(last) = last
        {
            metadata["continue"] = json!(Page::token(version, last));
            metadata["remainingItemCount"] = json!(remaining);
        }
        json!({ "apiVersion": "v1", "kind": "PodList", "metadata": metadata, "items": items })
    }
}

/// Where a paged list is: its `limit`, and from a `continue` token the first page's version and
/// the last pod already sent.
#[derive(Default)]
pub(crate) struct Page {
    pub(crate) limit: Option<usize>,
    pub(crate) version: Option<u64>,
    pub(crate) after: Option<(String, String)>,
}

impl Page {
    /// The token is opaque to clients; here it is `version/namespace/name` (neither may hold `/`).
    fn token(version: u64, (namespace, name): &(String, String)) -> String {
        format!("{version}/{namespace}/{name}")
    }

    /// The page a list's `limit` and `continue` parameters ask for; `Err` for a malformed one.
    pub(crate) fn parse(limit: Option<&str>, token: Option<&str>) -> Result<Self, String> {
        let limit = match limit {
            None | Some("" | "0") => None,
            Some(limit) => Some(limit.parse::<usize>().map_err(|_| format!("invalid limit {limit:?}"))?),
        };
        let Some(token) = token.filter(|token| !token.is_empty()) else { return Ok(Self { limit, ..Self::default() }) };
        let invalid = || format!("continue key is not valid: {token:?}");
        let mut parts = token.splitn(3, '/');
        let (Some(version), Some(namespace), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(invalid());
        };
        let version = version.parse().map_err(|_| invalid())?;
        Ok(Self { limit, version: Some(version), after: Some((namespace.to_owned(), name.to_owned())) })
    }
}

/// A watch event of `object` (a pod, given its `apiVersion` and `kind` as watch events carry).
fn event(kind: &str, mut object: Value) -> WatchEvent {
    object["apiVersion"] = json!("v1");
    object["kind"] = json!("Pod");
    json!({ "type": kind, "object": object })
}

/// A pod's JSON without `apiVersion`/`kind`, which the real API server also leaves off list items.
fn pod_json(pod: &StoredPod) -> Value {
    let spec = &pod.spec;
    let running = spec.phase == "Running";
    let ready = if spec.ready { "True" } else { "False" };
    let containers: Vec<Value> =
        spec.container_names().iter().map(|name| json!({ "name": name, "image": "fake-kube/shell" })).collect();
    let statuses: Vec<Value> = spec
        .container_names()
        .iter()
        .map(|name| {
            let state = if running {
                json!({ "running": { "startedAt": pod.created } })
            } else {
                json!({ "waiting": { "reason": "ContainerCreating" } })
            };
            json!({
                "name": name,
                "image": "fake-kube/shell",
                "imageID": "",
                "ready": spec.ready,
                "started": running,
                "restartCount": 0,
                "state": state,
            })
        })
        .collect();
    json!({
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "uid": pod.uid,
            "resourceVersion": pod.resource_version.to_string(),
            "creationTimestamp": pod.created,
            "labels": spec.labels,
            "annotations": spec.annotations,
        },
        "spec": { "containers": containers },
        "status": {
            "phase": spec.phase,
            "conditions": [{ "type": "Ready", "status": ready, "lastTransitionTime": pod.created }],
            "containerStatuses": statuses,
            "podIP": "127.0.0.1",
            "startTime": pod.created,
        },
    })
}

/// Namespaces and pod names become folder names, so keep them to what Kubernetes allows anyway.
fn check_name(what: &str, name: &str) -> io::Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if valid {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid {what} {name:?}: use a DNS-1123 name")))
    }
}

/// A UUID-shaped id, unique within this process (which is all a fake cluster needs).
fn new_uid(sequence: u64) -> String {
    format!("{:08x}-fa4e-4000-8000-{sequence:012x}", std::process::id())
}

/// Formats a time as Kubernetes does (`2024-01-02T03:04:05Z`), without pulling in a date crate.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (year, month, day) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 to a Gregorian date (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_700_000_000)), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn names_that_would_escape_the_folder_are_refused() {
        let store = PodStore::new().unwrap();
        assert!(store.add(PodSpec::new("ns", "../x")).is_err());
        assert!(store.add(PodSpec::new("", "x")).is_err());
        assert!(store.add(PodSpec::new("ns", "ok-1")).is_ok());
    }
}
