//! `Executor` as local child processes.
//!
//! A command runs as `/bin/sh -c <command>` in the project folder (or its `workdir`), in a new
//! process group, with stdin closed. When the shell exits, or the timeout fires, or the caller
//! goes away, the whole group is killed, so nothing the command started outlives it.
//!
//! The child gets a small base environment (below) plus the request's `env`, never the server's
//! own: that holds `DATABASE_URL` and the bootstrap key.
//!
//! No `pre_exec` hook is used: `process_group(0)` keeps std on the cheap `posix_spawn` path,
//! where a `pre_exec` closure would force fork+exec of the whole server.

use std::{
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use chrono::Utc;
use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use tokio::process::Command;

use crate::adapters::capture::{CappedBuffer, drain, outcome};
use crate::{
    domain::{CommandSpec, DomainError, ExecOutcome, Project},
    ports::{Executor, OutputSink, Stream},
};

/// Server environment variables a command inherits; everything else comes from the request.
const INHERITED_ENV: &[&str] = &["PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR"];
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// After the group is killed, how long to wait for output still in the pipes. Only a process that
/// left the group (`setsid`) could hold a pipe open longer; we stop reading rather than hang.
const DRAIN_AFTER_KILL: Duration = Duration::from_secs(2);

pub struct LocalExecutor {
    root: PathBuf,
    max_output_bytes: usize,
    base_env: Vec<(String, String)>,
}

impl LocalExecutor {
    pub fn new(root: impl Into<PathBuf>, max_output_bytes: usize) -> Self {
        let mut base_env: Vec<(String, String)> = INHERITED_ENV
            .iter()
            .filter_map(|name| std::env::var(name).ok().map(|value| ((*name).to_owned(), value)))
            .collect();
        if !base_env.iter().any(|(name, _)| name == "PATH") {
            base_env.push(("PATH".into(), DEFAULT_PATH.into()));
        }
        Self { root: root.into(), max_output_bytes, base_env }
    }

    /// The folder to run in: the project folder, or `workdir` inside it. The project source has
    /// just found the folder, so without a workdir nothing is resolved (no file system calls on
    /// the common path); with one, symlinks are resolved before the containment check, so a link
    /// cannot lead out of the project.
    async fn working_dir(&self, project: &Project, workdir: Option<&str>) -> Result<PathBuf, DomainError> {
        let project_dir = self.root.join(project.id.as_str());
        let Some(workdir) = workdir else { return Ok(project_dir) };
        let project_dir = tokio::fs::canonicalize(&project_dir)
            .await
            .map_err(|_| DomainError::not_found("project", project.id.as_str()))?;
        let dir = tokio::fs::canonicalize(project_dir.join(workdir))
            .await
            .map_err(|_| DomainError::invalid("workdir", "does not exist in the project"))?;
        if !dir.starts_with(&project_dir) {
            return Err(DomainError::invalid("workdir", "must not escape the project"));
        }
        if !tokio::fs::metadata(&dir).await.is_ok_and(|m| m.is_dir()) {
            return Err(DomainError::invalid("workdir", "is not a folder"));
        }
        Ok(dir)
    }

    fn command(&self, spec: &CommandSpec, dir: &Path) -> Command {
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(&spec.command)
            .current_dir(dir)
            .env_clear()
            .envs(self.base_env.iter().map(|(k, v)| (k, v)))
            .envs(&spec.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        command
    }
}

/// Kills the process group when dropped, unless already done: covers a caller that stops
/// waiting (client disconnect) as well as every early return.
struct GroupGuard(Option<Pid>);

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pgid) = self.0.take() {
            // ESRCH only means every member already exited.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

fn exit_code(status: ExitStatus) -> i32 {
    status.code().or_else(|| status.signal().map(|signal| 128 + signal)).unwrap_or(-1)
}

#[async_trait]
impl Executor for LocalExecutor {
    #[tracing::instrument(name = "command.execute", skip_all, fields(project.id = %project.id, executor = "local", exit_code))]
    async fn run(&self, project: &Project, spec: &CommandSpec, live: OutputSink) -> Result<ExecOutcome, DomainError> {
        let dir = self.working_dir(project, spec.workdir.as_deref()).await?;
        let started_at = Utc::now();
        let clock = Instant::now();
        let mut child = match self.command(spec, &dir).spawn() {
            Ok(child) => child,
            // The folder went away since the project was looked up.
            Err(_) if !tokio::fs::try_exists(&dir).await.unwrap_or(false) => {
                return Err(DomainError::not_found("project", project.id.as_str()));
            }
            Err(e) => return Err(DomainError::internal(anyhow::Error::new(e).context("spawning /bin/sh"))),
        };
        let pgid = child.id().and_then(|id| i32::try_from(id).ok()).map(Pid::from_raw);
        let mut group = GroupGuard(pgid);
        let mut stdout_pipe = child.stdout.take();
        let mut stderr_pipe = child.stderr.take();
        let mut stdout = CappedBuffer::new(self.max_output_bytes, Stream::Stdout);
        let mut stderr = CappedBuffer::new(self.max_output_bytes, Stream::Stderr);

        let run = async {
            let exited = async {
                let status = child.wait().await;
                // The shell is done: take its background jobs with it so the pipes close.
                group.kill();
                status
            };
            let output = async {
                tokio::join!(
                    drain(stdout_pipe.as_mut(), &mut stdout, &live),
                    drain(stderr_pipe.as_mut(), &mut stderr, &live)
                )
            };
            tokio::join!(exited, output).0
        };
        let finished = tokio::time::timeout(spec.timeout, run).await;

        let (status, timed_out) = match finished {
            Ok(status) => (status, false),
            Err(_elapsed) => {
                group.kill();
                let status = child.wait().await;
                let output = async {
                    tokio::join!(
                        drain(stdout_pipe.as_mut(), &mut stdout, &live),
                        drain(stderr_pipe.as_mut(), &mut stderr, &live)
                    )
                };
                let _ = tokio::time::timeout(DRAIN_AFTER_KILL, output).await;
                (status, true)
            }
        };
        let status =
            status.map_err(|e| DomainError::internal(anyhow::Error::new(e).context("waiting for the command")))?;
        tracing::Span::current().record("exit_code", exit_code(status));
        Ok(outcome(stdout, stderr, exit_code(status), timed_out, started_at, clock))
    }
}
