//! A wire-compatible fake Kubernetes API server for rdev-api's tests: pods you describe in
//! memory, and pod exec over WebSocket that runs the command for real, in a folder of the pod's
//! own. The real kube-rs client talks to it over plain HTTP.
//!
//! # Rust API
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use fake_kube::{FakeKube, Fault, PodSpec};
//!
//! let kube = FakeKube::start().await?; // 127.0.0.1:<free port>, served in the background
//! let dir = kube.add_pod(
//!     PodSpec::new("rdev", "pod-a")
//!         .label("rdev.orchard9.ai/project", "true")
//!         .label("rdev.orchard9.ai/project-id", "hello")
//!         .annotation("rdev.orchard9.ai/container", "main")
//!         .container("main")
//!         .phase("Running")
//!         .ready(true),
//! )?; // the pod's folder: exec runs there
//! let config = kube::Config::new(kube.url().parse().unwrap()); // "http://127.0.0.1:PORT"
//! kube.write_kubeconfig("/tmp/kubeconfig", "rdev")?; // for KUBECONFIG=... of a real binary
//! kube.set_fault(Fault::Http500).await?; // every API request now answers 500
//! let seen = kube.requests(); // API requests received so far (exec included)
//! kube.remove_pod("rdev", "pod-a");
//! # let _ = (dir, config, seen); Ok(()) }
//! ```
//!
//! - [`FakeKube::start`] / [`FakeKube::start_on`]: bind and serve; dropping the handle stops the
//!   server, kills running exec commands and deletes the pods' folders.
//! - [`FakeKube::add_pod`] adds or replaces a pod (same namespace and name keeps folder and uid),
//!   [`FakeKube::remove_pod`], [`FakeKube::pod_dir`].
//! - [`FakeKube::set_fault`] / [`FakeKube::fault`]: see [`Fault`].
//! - [`FakeKube::set_v4_only`]: exec negotiates only `v4.channel.k8s.io` (no stdin close).
//! - [`FakeKube::requests`]: Kubernetes API requests received, whatever the fault did to them
//!   (connections refused by a closed listener never arrive, so never count).
//! - [`FakeKube::active_execs`] and [`FakeKube::wait_execs_finished`]: exec sessions in progress,
//!   so a test can await the server's side of a cancelled exec (command killed and reaped).
//! - [`FakeKube::kubeconfig`] / [`FakeKube::write_kubeconfig`]: a kubeconfig with one cluster
//!   (this server, no TLS), an anonymous user and a context with the given namespace.
//! - [`FakeKube::serve_control`]: serve the control API on an extra listener that no fault touches.
//!
//! # Kubernetes API served
//!
//! `GET /api/v1/namespaces/{ns}/pods[?labelSelector=]`, `GET /api/v1/pods`,
//! `GET /api/v1/namespaces/{ns}/pods/{name}` (404 `Status` when missing), `GET /version`, and
//! `GET|POST /api/v1/namespaces/{ns}/pods/{name}/exec?command=..&container=..&stdout=true..` as a
//! WebSocket upgrade with subprotocol `v5.channel.k8s.io` or `v4.channel.k8s.io` (the first the
//! client offers; only v4 under `set_v4_only`). stdin (channel 0) is fed to the command; on v5
//! the client's close frame for it (channel 255, then 0) closes the command's stdin. Selectors: `k=v`, `k==v`, `k!=v`, `k`, `!k`, comma-separated.
//!
//! Exec checks, in the API server's order, each answered with a `Status` before the upgrade:
//! unknown pod → 404 `NotFound`; unknown container (or none named when the pod has several),
//! a `Succeeded`/`Failed` pod, no `command`, none of stdin/stdout/stderr, or no supported
//! subprotocol → 400 `BadRequest`. Other phases (`Pending` too) can be exec'd into. The command
//! runs without a TTY (`tty=true` is accepted, but no terminal is allocated); it ends with the
//! kubelet's status on channel 3 (`Success`, or `NonZeroExitCode` with cause `ExitCode`), and is
//! killed with its whole process group if the client leaves first. Watch (`?watch=1` on the pod
//! lists): `resourceVersion` resumes after that version (none: `ADDED` for every matching pod
//! first), `ADDED`/`MODIFIED`/`DELETED` as pods change or start/stop matching the selector,
//! `BOOKMARK`s every second with `allowWatchBookmarks=true`, an `ERROR` event with a `410
//! Expired` status for a version older than the history (see [`FakeKube::expire_watches`]),
//! and the stream's end after `timeoutSeconds`; under [`Fault::Refuse`] open watches are cut.
//! Not implemented: writes to pods, other resources.
//!
//! # Control HTTP API (not counted, not faulted)
//!
//! - `GET /_fake/pods` → `[{namespace,name,labels,annotations,containers,phase,ready,dir}]`
//! - `POST /_fake/pods` with a [`PodSpec`] as JSON (every field optional but `name`) → 201 with
//!   the pod and its `dir`
//! - `DELETE /_fake/pods/{ns}/{name}` → 204, or 404
//! - `GET /_fake/fault`, `PUT /_fake/fault` with `{"fault":"none|http500|refuse|hang|drop_mid_stream|close_mid_stream"}`
//! - `GET /_fake/requests` → `{"requests":N}`
//! - `PUT /_fake/protocols` with `{"v4_only":true|false}`
//!
//! They are mounted on the API port and on [`FakeKube::serve_control`]'s port; under
//! [`Fault::Refuse`] only the latter answers.

// Request paths must not panic; tests (cfg(test)) may, per the workspace's clippy.toml.
#![deny(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod control;
mod exec;
mod pods;
mod selector;
mod server;
mod watch;

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use pods::PodSpec;

/// How the fake misbehaves, switchable at any time with [`FakeKube::set_fault`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Behave.
    #[default]
    None,
    /// Every API request answers 500 with an `InternalError` `Status`.
    Http500,
    /// The listener is closed (new connections are refused) and requests arriving on
    /// already-open connections are dropped unanswered.
    Refuse,
    /// Requests are accepted and never answered (until the fault changes).
    Hang,
    /// Exec sends the first chunk of stdout (or none, if the command prints none before it
    /// exits), then drops the TCP connection: no status, no close frame, like a network failure.
    /// kube-rs 5 then fails the exec task (`join()` errs, `take_status()` yields `None`) but does
    /// not end its stdout/stderr readers: read them alongside `take_status()`, not to EOF first.
    DropMidStream,
    /// Like `DropMidStream`, but closes the WebSocket cleanly: streams end, no status arrives.
    CloseMidStream,
}

/// A running fake API server; dropping it shuts the server down.
pub struct FakeKube {
    shared: Arc<server::Shared>,
}

impl FakeKube {
    /// Starts on `127.0.0.1` with a free port.
    pub async fn start() -> io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts on the given address (port 0 picks a free one). Needs a Tokio runtime.
    pub async fn start_on(addr: SocketAddr) -> io::Result<Self> {
        Ok(Self { shared: server::start(addr).await? })
    }

    /// `http://IP:PORT`, what `kube::Config::new` and a kubeconfig's `server` take.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// Adds the pod (or replaces the one with the same namespace and name) and returns its folder.
    /// Fails for names that are not DNS-1123 names or when the folder cannot be created.
    pub fn add_pod(&self, pod: PodSpec) -> io::Result<PathBuf> {
        self.shared.pods.add(pod)
    }

    /// Removes the pod and deletes its folder; false when there was no such pod.
    pub fn remove_pod(&self, namespace: &str, name: &str) -> bool {
        self.shared.pods.remove(namespace, name)
    }

    /// The folder exec commands of this pod run in.
    pub fn pod_dir(&self, namespace: &str, name: &str) -> Option<PathBuf> {
        self.shared.pods.find(namespace, name).map(|(_, dir)| dir)
    }

    /// Switches the fault. Returns once it is in force: after `Refuse`, connecting fails; after
    /// leaving `Refuse`, the same address listens again (the error is that re-bind failing).
    pub async fn set_fault(&self, fault: Fault) -> io::Result<()> {
        self.shared.set_fault(fault).await
    }

    pub fn fault(&self) -> Fault {
        self.shared.fault()
    }

    /// Forgets the watch history and ends every watch, as an API server whose watch cache was
    /// compacted: a watcher that resumes from its last version gets `410 Gone` and must list again.
    pub fn expire_watches(&self) {
        self.shared.pods.compact();
        self.shared.end_watches();
    }

    /// Makes exec speak only `v4.channel.k8s.io`, as API servers before 1.30 do: a client that
    /// offers only v5 is refused, and one that offers both gets v4 (which has no way to close
    /// stdin but closing the whole stream).
    pub fn set_v4_only(&self, only: bool) {
        self.shared.set_v4_only(only);
    }

    /// Kubernetes API requests received so far, exec included, control requests not.
    pub fn requests(&self) -> u64 {
        self.shared.requests()
    }

    /// Exec sessions whose command is still running or being cleaned up.
    pub fn active_execs(&self) -> usize {
        *self.shared.active_execs().borrow()
    }

    /// Resolves when no exec session is running: every command has exited or been killed and
    /// reaped.
    pub async fn wait_execs_finished(&self) {
        let mut active = self.shared.active_execs();
        let _ = active.wait_for(|n| *n == 0).await;
    }

    /// A kubeconfig (YAML) pointing at this server with `namespace` as the context's namespace.
    pub fn kubeconfig(&self, namespace: &str) -> String {
        // JSON strings are valid YAML scalars, and escape whatever the namespace holds.
        let quote = |text: &str| serde_json::Value::from(text).to_string();
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake-kube\n  cluster:\n    server: {server}\n\
             users:\n- name: fake-kube\n  user: {{}}\ncontexts:\n- name: fake-kube\n  context:\n    \
             cluster: fake-kube\n    user: fake-kube\n    namespace: {namespace}\n\
             current-context: fake-kube\npreferences: {{}}\n",
            server = quote(&self.url()),
            namespace = quote(namespace),
        )
    }

    /// Writes [`FakeKube::kubeconfig`] to `path`.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>, namespace: &str) -> io::Result<()> {
        std::fs::write(path, self.kubeconfig(namespace))
    }

    /// Also serves the control API on `addr`, a listener no fault touches; returns its address.
    pub async fn serve_control(&self, addr: SocketAddr) -> io::Result<SocketAddr> {
        let listener = server::bind(addr)?;
        let bound = listener.local_addr()?;
        server::serve_plain(listener, control::router(Arc::clone(&self.shared)), &self.shared);
        Ok(bound)
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.shared.shut_down();
    }
}
