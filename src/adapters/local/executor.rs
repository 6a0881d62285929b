//! `Executor` as local processes, started confined by the sandbox helper.
//!
//! A command runs as `/bin/sh -c <command>` in the project folder (or its `workdir`), its stdin
//! the request's bytes then EOF (or closed at start), its output read from pipes this server
//! holds. A session's command runs in `session_shell::SCRIPT` with a fourth pipe for its state. Its environment is a small base
//! (below) plus the request's `env`, never the server's own, which holds `DATABASE_URL` and the
//! bootstrap key. `HOME` is the project folder: the one place a command can keep files.
//!
//! Its end is the shell's exit; the sandbox has then already killed everything else it started.
//! A timeout, or a caller that stops waiting (client disconnect), kills it and everything it
//! started.

use std::{
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use chrono::Utc;

use super::sandbox::{RunningCommand, Sandbox, SpawnRequest};
use crate::adapters::{
    capture::{Capture, drain},
    session_shell,
};
use crate::{
    domain::{CommandSpec, DomainError, ExecOutcome, Project, ShellState, session::MAX_STATE_RECORD_BYTES},
    ports::{Executor, HealthCheck, OutputSink, Stop, Stream},
};

/// Server environment variables a command inherits; everything else comes from the request.
const INHERITED_ENV: &[&str] = &["PATH", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ"];
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// After a kill, how long to wait for output still in the pipes: the sandbox has ended every
/// writer by then, so this only bounds a pipe handed to something outside it.
const DRAIN_AFTER_KILL: Duration = Duration::from_secs(2);

pub struct LocalExecutor {
    root: PathBuf,
    base_env: Vec<(String, String)>,
    pub(super) sandbox: Arc<Sandbox>,
}

impl LocalExecutor {
    /// `root` is the projects folder as the sandbox sees it (canonical).
    pub fn new(root: impl Into<PathBuf>, sandbox: Arc<Sandbox>) -> Self {
        let mut base_env: Vec<(String, String)> = INHERITED_ENV
            .iter()
            .filter_map(|name| std::env::var(name).ok().map(|value| ((*name).to_owned(), value)))
            .collect();
        if !base_env.iter().any(|(name, _)| name == "PATH") {
            base_env.push(("PATH".into(), DEFAULT_PATH.into()));
        }
        Self { root: root.into(), base_env, sandbox }
    }

    /// Checks a `workdir` before anything starts: symlinks are resolved before the containment
    /// check, so a link cannot lead out of the project (and inside the sandbox nothing outside
    /// it would be reachable anyway). The project source has just found the folder, so without
    /// a workdir nothing is resolved (no file system calls on the common path).
    async fn check_workdir(&self, project: &Project, workdir: Option<&str>) -> Result<(), DomainError> {
        let Some(workdir) = workdir else { return Ok(()) };
        let project_dir = tokio::fs::canonicalize(self.root.join(project.id.as_str()))
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
        Ok(())
    }

    /// The state a session's command reported, if its root is this project's folder as the
    /// sandbox shows it (the same path): a record naming another root is no record.
    async fn shell_state(&self, project: &Project, record: &[u8]) -> Option<ShellState> {
        let state = ShellState::parse(record)?;
        let project_dir = tokio::fs::canonicalize(self.root.join(project.id.as_str())).await.ok()?;
        (Path::new(&state.root) == project_dir).then_some(state)
    }

    /// A command's environment before the request's variables: the base, and `HOME`.
    pub(super) fn environment(&self, project: &Project) -> Vec<(String, String)> {
        let home = self.root.join(project.id.as_str());
        let mut env = self.base_env.clone();
        env.push(("HOME".into(), home.to_string_lossy().into_owned()));
        env
    }

    fn request(&self, project: &Project, spec: &CommandSpec) -> SpawnRequest {
        let mut env = self.environment(project);
        env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        // A session's command goes to its workdir itself, so it knows the project root.
        let (workdir, argv) = if spec.keep_state {
            (None, session_shell::argv("-", spec.workdir.as_deref(), &spec.command))
        } else {
            (spec.workdir.clone(), vec!["/bin/sh".into(), "-c".into(), spec.command.clone()])
        };
        SpawnRequest {
            project: project.id.as_str().to_owned(),
            workdir,
            argv,
            env,
            has_stdin: spec.stdin.is_some(),
            tty: false,
        }
    }
}

/// Writes `stdin` and closes it, so the command sees EOF. A command that exits (or closes its
/// stdin) before reading it all ends the writing: the rest is not its business.
async fn feed(pipe: Option<tokio::net::unix::pipe::Sender>, stdin: Option<&[u8]>) {
    use tokio::io::AsyncWriteExt;
    if let (Some(mut pipe), Some(stdin)) = (pipe, stdin) {
        let _ = pipe.write_all(stdin).await;
    }
}

/// Reads a session command's state record to EOF, at most one byte past the most it may be
/// (a larger one is then refused by `ShellState::parse`); the rest is read and dropped, so the
/// shell is never left blocked on a full pipe.
async fn read_record(pipe: Option<&mut tokio::net::unix::pipe::Receiver>, record: &mut Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let Some(pipe) = pipe else { return };
    let mut buf = vec![0; 64 * 1024];
    while let Ok(n @ 1..) = pipe.read(&mut buf).await {
        let room = (MAX_STATE_RECORD_BYTES + 1).saturating_sub(record.len());
        record.extend_from_slice(&buf[..n.min(room)]);
    }
}

fn pipe() -> Result<(tokio::net::unix::pipe::Receiver, OwnedFd), DomainError> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| DomainError::internal(anyhow::Error::new(e).context("creating a pipe")))?;
    let read = tokio::net::unix::pipe::Receiver::from_owned_fd(read)
        .map_err(|e| DomainError::internal(anyhow::Error::new(e).context("watching a pipe")))?;
    Ok((read, write))
}

/// The exit status and the limit that stopped the command (if one did), or the error that kept
/// it from running.
pub(super) async fn ended(command: &mut RunningCommand) -> Result<(i32, Option<String>), DomainError> {
    let exit = command.wait().await?;
    match &exit.failure {
        None => Ok((exit.exit_code, exit.limit)),
        Some(failure) => Err(failure.into()),
    }
}

#[async_trait]
impl Executor for LocalExecutor {
    #[tracing::instrument(name = "command.execute", skip_all, fields(project.id = %project.id, executor = "local", exit_code))]
    async fn run(
        &self,
        project: &Project,
        spec: &CommandSpec,
        live: OutputSink,
        stop: &Stop,
    ) -> Result<ExecOutcome, DomainError> {
        self.check_workdir(project, spec.workdir.as_deref()).await?;
        let (mut stdout_pipe, stdout_end) = pipe()?;
        let (mut stderr_pipe, stderr_end) = pipe()?;
        let mut fds = vec![stdout_end, stderr_end];
        let stdin_pipe = match &spec.stdin {
            Some(_) => {
                let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                    .map_err(|e| DomainError::internal(anyhow::Error::new(e).context("creating a pipe")))?;
                fds.insert(0, read);
                Some(
                    tokio::net::unix::pipe::Sender::from_owned_fd(write)
                        .map_err(|e| DomainError::internal(anyhow::Error::new(e).context("watching a pipe")))?,
                )
            }
            None => None,
        };
        let mut record_pipe = if spec.keep_state {
            let (read, write) = pipe()?;
            fds.push(write);
            Some(read)
        } else {
            None
        };
        let started_at = Utc::now();
        let clock = Instant::now();
        let mut command = self.sandbox.spawn(self.request(project, spec), fds).await?;
        let capture = Capture::new(spec.max_output_bytes, live);
        let mut record = Vec::new();

        let run = async {
            let output = async {
                tokio::join!(
                    drain(Some(&mut stdout_pipe), Stream::Stdout, &capture),
                    drain(Some(&mut stderr_pipe), Stream::Stderr, &capture),
                    feed(stdin_pipe, spec.stdin.as_deref()),
                    read_record(record_pipe.as_mut(), &mut record),
                )
            };
            tokio::join!(ended(&mut command), output).0
        };
        let unless_stopped = async {
            tokio::select! {
                exit_code = run => Some(exit_code),
                () = stop.cancelled() => None,
            }
        };
        let (exit_code, timed_out, ended_itself) = match tokio::time::timeout(spec.timeout, unless_stopped).await {
            Ok(Some(exit_code)) => (exit_code, false, true),
            // Killed, then waited for: its end is the sandbox's report that nothing is left.
            stopped_or_elapsed => {
                command.kill().await;
                let exit_code = ended(&mut command).await;
                let output = async {
                    tokio::join!(
                        drain(Some(&mut stdout_pipe), Stream::Stdout, &capture),
                        drain(Some(&mut stderr_pipe), Stream::Stderr, &capture)
                    )
                };
                let _ = tokio::time::timeout(DRAIN_AFTER_KILL, output).await;
                (exit_code, stopped_or_elapsed.is_err(), false)
            }
        };
        let (exit_code, limit) = exit_code.map_err(|error| match error {
            DomainError::NotFound { .. } => DomainError::not_found("project", project.id.as_str()),
            other => other,
        })?;
        tracing::Span::current().record("exit_code", exit_code);
        let mut outcome = capture.outcome(exit_code, timed_out, started_at, clock);
        outcome.error = limit;
        if spec.keep_state && ended_itself {
            outcome.shell_state = self.shell_state(project, &record).await.map(Box::new);
        }
        Ok(outcome)
    }

    async fn check(&self, project: &Project, spec: &CommandSpec) -> Result<(), DomainError> {
        self.check_workdir(project, spec.workdir.as_deref()).await
    }
}

/// `checks.executor` of `/ready`: the helper that starts commands, and how it confines them.
pub struct SandboxHealth(pub Arc<Sandbox>);

#[async_trait]
impl HealthCheck for SandboxHealth {
    fn name(&self) -> &'static str {
        "executor"
    }

    async fn check(&self) -> Result<String, String> {
        let capabilities = self.0.capabilities();
        if !self.0.is_alive() {
            // Started again on the next command; until then nothing can run.
            return Ok("sandbox helper restarting".into());
        }
        Ok(if capabilities.confined { "ok".into() } else { "ok (unconfined: RDEV_SANDBOX=off)".into() })
    }
}
