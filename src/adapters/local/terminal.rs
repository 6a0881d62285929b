//! `TerminalHost` on the local executor: the shell is started by the sandbox helper like any
//! command, so it is confined the same way; its init opens the pseudo-terminal in the command's
//! own devpts (so the shell sees only its own terminals) and hands the master back over a
//! socket (see `pty`). Its other side is the shell's stdin, stdout, stderr and controlling
//! terminal.
//!
//! The shell leads its own session; closing the socket drops the running command, and the
//! sandbox kills everything the shell started (its PID namespace ends with it).

use std::os::fd::OwnedFd;

use async_trait::async_trait;

use super::{
    LocalExecutor,
    executor::ended,
    pty::{Master, receive_master},
    sandbox::SpawnRequest,
};
use crate::{
    adapters::terminal::{SHELL_ARGV, connect},
    domain::{DomainError, Project, TerminalSize},
    ports::{TerminalHost, TerminalIo},
};

fn pty_error(what: &str, error: impl std::fmt::Display) -> DomainError {
    DomainError::internal(anyhow::anyhow!("{what}: {error}"))
}

#[async_trait]
impl TerminalHost for LocalExecutor {
    async fn open(&self, project: &Project, size: TerminalSize) -> Result<TerminalIo, DomainError> {
        let (ours, theirs) =
            std::os::unix::net::UnixStream::pair().map_err(|e| pty_error("creating the terminal's socket", e))?;
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
        let mut command = self.sandbox.spawn(request, vec![OwnedFd::from(theirs)]).await?;
        let master = match receive_master(ours).await.map_err(|e| pty_error("receiving the terminal", e))? {
            Some(master) => Master::new(master).map_err(|e| pty_error("watching the terminal", e))?,
            // It ended before it had a terminal: its end says why.
            None => {
                ended(&mut command).await?;
                return Err(pty_error("opening a terminal", "the command ended before it had one"));
            }
        };
        master.resize(size).map_err(|e| pty_error("sizing the terminal", e))?;
        let exit = async move { ended(&mut command).await.map(|(exit_code, _)| exit_code) };
        let resize = |writer: &mut Master, size| {
            if let Err(error) = writer.resize(size) {
                tracing::debug!(%error, "resizing a terminal");
            }
        };
        Ok(connect(master.clone(), master, resize, exit))
    }
}
