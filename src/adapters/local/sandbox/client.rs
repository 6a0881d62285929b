//! The server's side of the sandbox helper: starts it, sends it commands with their
//! descriptors, and hands each waiting caller its command's exit. A helper that dies (it should
//! not) fails the commands it was running and is started again for the next one.

use std::{
    collections::HashMap,
    io::IoSlice,
    os::fd::{AsRawFd, OwnedFd, RawFd},
    path::PathBuf,
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use anyhow::{Context as _, bail};
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use tokio::{io::Interest, net::UnixStream, sync::oneshot};

use super::protocol::{
    Capabilities, FailureKind, FrameReader, FromHelper, HELPER_ARG, HelperConfig, Spawn, SpawnFailure, ToHelper, encode,
};
use crate::domain::DomainError;

/// `PATH` of the helper itself; commands get their own environment from each request.
const HELPER_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// How a command ended, as the helper saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// The shell's status, `128 + signal` when a signal ended it.
    pub exit_code: i32,
    /// Set when the command never ran.
    pub failure: Option<SpawnFailure>,
    /// The limit that stopped it, in words for its answer.
    pub limit: Option<String>,
}

/// What to run; the descriptors go alongside.
#[derive(Debug, Clone)]
pub struct SpawnRequest {
    pub project: String,
    pub workdir: Option<String>,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub has_stdin: bool,
    pub tty: bool,
}

pub struct Sandbox {
    program: PathBuf,
    config: HelperConfig,
    capabilities: Capabilities,
    current: Mutex<Arc<Connection>>,
    restarting: tokio::sync::Mutex<()>,
}

impl Sandbox {
    /// Starts the helper (`program` is the `rdev-api` binary) and waits until it is ready;
    /// fails with the helper's reason when it cannot confine commands as configured.
    pub async fn start(program: PathBuf, config: HelperConfig) -> anyhow::Result<Self> {
        let (connection, capabilities) = Connection::start(&program, &config).await?;
        Ok(Self {
            program,
            config,
            capabilities,
            current: Mutex::new(connection),
            restarting: tokio::sync::Mutex::new(()),
        })
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// The projects folder as commands see it (canonical).
    pub fn projects_root(&self) -> &std::path::Path {
        &self.config.projects_root
    }

    /// Whether the helper is up (it is started again on demand when it is not).
    pub fn is_alive(&self) -> bool {
        self.lock().alive()
    }

    /// Starts a command. `fds` become its fds 0 (when `has_stdin`), 1, 2, 3…; this process's
    /// copies are closed once the helper has its own.
    pub async fn spawn(&self, request: SpawnRequest, fds: Vec<OwnedFd>) -> Result<RunningCommand, DomainError> {
        let connection = self.connection().await?;
        let id = connection.next_id.fetch_add(1, Ordering::Relaxed);
        let (exited, exit) = oneshot::channel();
        connection.waiting().insert(id, exited);
        let spawn = Spawn {
            id,
            project: request.project,
            workdir: request.workdir,
            argv: request.argv,
            env: request.env,
            has_stdin: request.has_stdin,
            fds: fds.len(),
            tty: request.tty,
        };
        if let Err(error) = connection.send(&ToHelper::Spawn(spawn), &fds).await {
            connection.waiting().remove(&id);
            // The next command starts a new helper.
            connection.alive.store(false, Ordering::Release);
            return Err(helper_gone(error));
        }
        drop(fds);
        Ok(RunningCommand { id, connection, exit, finished: false })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Arc<Connection>> {
        self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn connection(&self) -> Result<Arc<Connection>, DomainError> {
        let current = self.lock().clone();
        if current.alive() {
            return Ok(current);
        }
        let _one_restart = self.restarting.lock().await;
        let current = self.lock().clone();
        if current.alive() {
            return Ok(current);
        }
        tracing::warn!("starting the sandbox helper again");
        let (connection, _) = Connection::start(&self.program, &self.config).await.map_err(DomainError::internal)?;
        *self.lock() = connection.clone();
        Ok(connection)
    }
}

impl Drop for Sandbox {
    /// The helper (and every command it runs) ends with the executor that owns it.
    fn drop(&mut self) {
        self.lock().stop();
    }
}

fn helper_gone(error: impl std::fmt::Display) -> DomainError {
    DomainError::internal(anyhow::anyhow!("the sandbox helper is not reachable: {error}"))
}

/// A started command. Dropping it before its exit was seen kills it.
pub struct RunningCommand {
    id: u64,
    connection: Arc<Connection>,
    exit: oneshot::Receiver<Exit>,
    finished: bool,
}

impl RunningCommand {
    /// Waits for the command's end. Cancel-safe: waiting again continues the same wait.
    pub async fn wait(&mut self) -> Result<Exit, DomainError> {
        let exit = (&mut self.exit).await.map_err(|_| helper_gone("it stopped while the command ran"));
        self.finished = true;
        exit
    }

    /// Kills the command and everything it started; `wait` then returns its end.
    pub async fn kill(&self) {
        let _ = self.connection.send(&ToHelper::Kill { id: self.id }, &[]).await;
    }
}

impl Drop for RunningCommand {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.connection.waiting().remove(&self.id);
        let (connection, id) = (self.connection.clone(), self.id);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { connection.send(&ToHelper::Kill { id }, &[]).await });
        }
    }
}

impl From<&SpawnFailure> for DomainError {
    fn from(failure: &SpawnFailure) -> Self {
        match failure.kind {
            FailureKind::ProjectMissing => DomainError::not_found("project", ""),
            FailureKind::WorkdirMissing => DomainError::invalid("workdir", "does not exist in the project"),
            FailureKind::Internal => {
                DomainError::internal(anyhow::anyhow!("the command could not start: {}", failure.message))
            }
        }
    }
}

/// One running helper and its socket.
struct Connection {
    socket: UnixStream,
    /// Frames are written whole, one at a time.
    writing: tokio::sync::Mutex<()>,
    waiting: Mutex<HashMap<u64, oneshot::Sender<Exit>>>,
    next_id: AtomicU64,
    alive: AtomicBool,
    child: Mutex<Option<tokio::process::Child>>,
}

impl Connection {
    async fn start(program: &std::path::Path, config: &HelperConfig) -> anyhow::Result<(Arc<Self>, Capabilities)> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().context("creating the helper's socket")?;
        let child = tokio::process::Command::new(program)
            .arg(HELPER_ARG)
            .env_clear()
            .env("PATH", HELPER_PATH)
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting the sandbox helper {}", program.display()))?;
        ours.set_nonblocking(true)?;
        let connection = Arc::new(Self {
            socket: UnixStream::from_std(ours)?,
            writing: tokio::sync::Mutex::new(()),
            waiting: Mutex::default(),
            next_id: AtomicU64::new(1),
            alive: AtomicBool::new(true),
            child: Mutex::new(Some(child)),
        });
        connection.send_frame(&encode(config), &[]).await.context("configuring the sandbox helper")?;
        let mut frames = FrameReader::default();
        let capabilities = match connection
            .read_event(&mut frames, &mut [0u8; 4096])
            .await
            .context("waiting for the sandbox helper")?
        {
            FromHelper::Ready(capabilities) => capabilities,
            FromHelper::Unusable { reason } => bail!("commands cannot be confined here: {reason}"),
            FromHelper::Exited { .. } => bail!("the sandbox helper answered out of turn"),
        };
        tokio::spawn(connection.clone().read_events(frames));
        Ok((connection, capabilities))
    }

    fn alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    fn stop(&self) {
        if let Some(child) = self.child.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            let _ = child.start_kill();
        }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Exit>>> {
        self.waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn send(&self, message: &ToHelper, fds: &[OwnedFd]) -> std::io::Result<()> {
        let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        self.send_frame(&encode(message), &raw).await
    }

    /// Writes one frame, the descriptors with its first bytes.
    async fn send_frame(&self, frame: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
        let _whole = self.writing.lock().await;
        let mut sent = 0;
        while sent < frame.len() {
            sent += self
                .socket
                .async_io(Interest::WRITABLE, || {
                    let rights = [ControlMessage::ScmRights(fds)];
                    let cmsgs: &[ControlMessage<'_>] = if sent == 0 && !fds.is_empty() { &rights } else { &[] };
                    let iov = [IoSlice::new(&frame[sent..])];
                    sendmsg::<()>(self.socket.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)
                        .map_err(std::io::Error::from)
                })
                .await?;
        }
        Ok(())
    }

    /// The next event; `buf` is the read buffer, kept by the caller across events (one exit per
    /// command: a fresh zeroed 16 KiB each time was measurable on the shell path).
    async fn read_event(&self, frames: &mut FrameReader, buf: &mut [u8]) -> anyhow::Result<FromHelper> {
        loop {
            if let Some(event) = frames.next()? {
                return Ok(event);
            }
            self.socket.readable().await?;
            match self.socket.try_read(buf) {
                Ok(0) => bail!("the sandbox helper exited"),
                Ok(n) => frames.push(&buf[..n], []),
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Hands each exit to its waiter until the helper goes away; then fails every waiter.
    async fn read_events(self: Arc<Self>, mut frames: FrameReader) {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match self.read_event(&mut frames, &mut buf).await {
                Ok(FromHelper::Exited { id, exit_code, failure, limit }) => {
                    if let Some(waiter) = self.waiting().remove(&id) {
                        let _ = waiter.send(Exit { exit_code, failure, limit });
                    }
                }
                Ok(other) => tracing::warn!(?other, "unexpected message from the sandbox helper"),
                Err(error) => {
                    self.alive.store(false, Ordering::Release);
                    let lost = std::mem::take(&mut *self.waiting());
                    if !lost.is_empty() {
                        tracing::error!(%error, commands = lost.len(), "the sandbox helper stopped with commands running");
                    }
                    return;
                }
            }
        }
    }
}
