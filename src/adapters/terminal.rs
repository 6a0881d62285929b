//! What the local and the Kubernetes terminals share: the shell they start, and the tasks that
//! move bytes between a terminal's two ends and the `TerminalIo` channels.
//!
//! Back-pressure: output is read only as fast as the client takes it (the channel holds
//! `TERMINAL_OUTPUT_BACKLOG` chunks), so a client that stops reading stops the reads, the
//! terminal's buffer fills, and the shell blocks on its next write; memory stays flat.
//! Dropping the `TerminalIo` (the socket closed, for any reason) drops the `exit` future, which
//! owns the running shell: each host kills it, and everything it started, on drop.

use std::{future::Future, time::Duration};

use bytes::Bytes;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    sync::{mpsc, oneshot},
};

use crate::{
    domain::{DomainError, TerminalInput, TerminalSize},
    ports::{TERMINAL_OUTPUT_BACKLOG, TerminalIo},
};

/// The shell a terminal runs: bash when the environment has it, else sh, interactive, with the
/// terminal type xterm.js (and most terminals) answer to. Nothing in the project becomes shell
/// code or keeps what is typed: no rc or profile file is read (`--norc --noprofile`, and no
/// `ENV`/`BASH_ENV` for sh), `HOME` is a fresh folder in the shell's own `/tmp` (outside the
/// project, where a key that may only write files could leave a `.bashrc`), and history is not
/// saved (an empty `HISTFILE`), so a `files:read` key finds no `.bash_history` of anyone's.
pub const SHELL_ARGV: [&str; 3] = [
    "/bin/sh",
    "-c",
    "export TERM=xterm-256color; unset ENV BASH_ENV; HOME=$(mktemp -d 2>/dev/null) || HOME=/tmp; \
     export HOME HISTFILE=; \
     if command -v bash >/dev/null 2>&1; then exec bash --norc --noprofile -i; else exec sh -i; fi",
];

/// After the shell exited, how long its last output may take to arrive: a confined local shell
/// takes everything it started with it and a pod exec's stream ends, so this bounds only a
/// leftover process holding the terminal open.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);

/// Largest chunk read from a terminal at once.
const READ_CHUNK: usize = 16 * 1024;

/// Runs a terminal given its ends: `reader` (output), `writer` (keystrokes), `resize` (given
/// the writer, which on a local terminal is what can resize it), and
/// `exit`, the shell's end, which owns the shell: it is dropped, killing the shell, when the
/// client goes away first.
pub fn connect<R, W>(
    mut reader: R,
    mut writer: W,
    mut resize: impl FnMut(&mut W, TerminalSize) + Send + 'static,
    exit: impl Future<Output = Result<i32, DomainError>> + Send + 'static,
) -> TerminalIo
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (input, mut keys) = mpsc::channel::<TerminalInput>(TERMINAL_OUTPUT_BACKLOG);
    let (output_tx, output) = mpsc::channel::<Bytes>(TERMINAL_OUTPUT_BACKLOG);
    let (exit_tx, exit_rx) = oneshot::channel();
    let client = output_tx.clone();

    let mut reading = tokio::spawn(async move {
        let mut buf = vec![0u8; READ_CHUNK];
        // A terminal whose other side has closed reads as EIO: that is its end, like EOF.
        while let Ok(n @ 1..) = reader.read(&mut buf).await {
            if output_tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                return;
            }
        }
    });
    let writing = tokio::spawn(async move {
        while let Some(input) = keys.recv().await {
            match input {
                TerminalInput::Keys(bytes) => {
                    // A shell that stopped reading has exited; its end comes from `exit`.
                    if writer.write_all(&bytes).await.is_err() || writer.flush().await.is_err() {
                        break;
                    }
                }
                TerminalInput::Resize(size) => resize(&mut writer, size),
            }
        }
    });
    tokio::spawn(async move {
        tokio::pin!(exit);
        let ended = tokio::select! {
            // The client is gone: dropping `exit` kills the shell.
            () = client.closed() => None,
            ended = &mut exit => Some(ended),
        };
        writing.abort();
        let Some(ended) = ended else {
            reading.abort();
            return;
        };
        drop(client);
        if tokio::time::timeout(DRAIN_AFTER_EXIT, &mut reading).await.is_err() {
            reading.abort();
        }
        let _ = exit_tx.send(ended);
    });
    TerminalIo { input, output, exit: exit_rx }
}
