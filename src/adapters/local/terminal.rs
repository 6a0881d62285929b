//! `TerminalHost` on the local executor: a pseudo-terminal (`pty-process`'s, non-blocking and
//! async on tokio) whose other side becomes the shell's stdin, stdout, stderr and controlling
//! terminal, started by the sandbox helper like any command, so it is confined the same way.
//! `pty-process` is used for the terminal only: its `Command` spawns directly, and local
//! commands are started by the helper, which is handed the terminal's descriptors.
//!
//! The shell leads its own session; closing the socket drops the running command, and the
//! sandbox kills everything the shell started (its PID namespace ends with it).

use std::os::fd::AsFd;

use async_trait::async_trait;

use super::{LocalExecutor, executor::ended, sandbox::SpawnRequest};
use crate::{
    adapters::terminal::{SHELL_ARGV, connect},
    domain::{DomainError, Project, TerminalSize},
    ports::{TerminalHost, TerminalIo},
};

fn pty_error(what: &str, error: impl std::fmt::Display) -> DomainError {
    DomainError::internal(anyhow::anyhow!("{what}: {error}"))
}

fn winsize(size: TerminalSize) -> pty_process::Size {
    pty_process::Size::new(size.rows, size.cols)
}

#[async_trait]
impl TerminalHost for LocalExecutor {
    async fn open(&self, project: &Project, size: TerminalSize) -> Result<TerminalIo, DomainError> {
        let (pty, pts) = pty_process::open().map_err(|e| pty_error("opening a pseudo-terminal", e))?;
        pty.resize(winsize(size)).map_err(|e| pty_error("sizing the terminal", e))?;
        let fds = (0..3)
            .map(|_| pts.as_fd().try_clone_to_owned())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pty_error("sharing the terminal", e))?;
        drop(pts);
        let mut env = self.environment(project);
        env.push(("TERM".into(), "xterm-256color".into()));
        let request = SpawnRequest {
            project: project.id.as_str().to_owned(),
            workdir: None,
            argv: SHELL_ARGV.map(str::to_owned).to_vec(),
            env,
            has_stdin: true,
            tty: true,
        };
        let mut command = self.sandbox.spawn(request, fds).await?;
        let (reader, writer) = pty.into_split();
        let exit = async move { ended(&mut command).await };
        let resize = |writer: &mut pty_process::OwnedWritePty, size| {
            if let Err(error) = writer.resize(winsize(size)) {
                tracing::debug!(%error, "resizing a terminal");
            }
        };
        Ok(connect(reader, writer, resize, exit))
    }
}
