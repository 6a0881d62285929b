//! Owns an exec session after the WebSocket upgrade: runs the argv for real in the pod's folder,
//! multiplexes its output onto the remotecommand channels (v4/v5), reports the exit on the
//! status channel as the kubelet does, and kills the whole process group if the client leaves.
//!
//! With `tty=true` the command runs on a real pseudo-terminal (`pty-process`), in its own
//! session with the terminal as its controlling one, as a container runtime runs it: output
//! (there is no separate stderr) comes on stdout, and the resize channel (4) carries
//! `{"Width","Height"}` sizes, applied to the terminal as they come.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};

use axum::extract::ws::{Message, WebSocket};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::{Pid, getsid};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};

use crate::server::{ExecCount, stopped};

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;
const RESIZE: u8 = 4;
/// How long a terminal's shell has, once hung up, to end its jobs before the group is killed.
const HANGUP_GRACE: std::time::Duration = std::time::Duration::from_secs(2);
/// v5 only: the client (or server) says it will send no more on the channel in the next byte.
const CLOSE: u8 = 255;

/// The remotecommand WebSocket subprotocols we speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    V4,
    V5,
}

impl Protocol {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::V4 => "v4.channel.k8s.io",
            Self::V5 => "v5.channel.k8s.io",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Self> {
        [Self::V5, Self::V4].into_iter().find(|protocol| protocol.name() == name)
    }
}

/// One exec, as validated by the API layer.
pub(crate) struct ExecRequest {
    pub(crate) argv: Vec<String>,
    pub(crate) container: String,
    pub(crate) dir: PathBuf,
    pub(crate) stdin: bool,
    pub(crate) stdout: bool,
    pub(crate) stderr: bool,
    /// Run on a pseudo-terminal (the API layer refuses it with stderr).
    pub(crate) tty: bool,
    pub(crate) protocol: Protocol,
    /// Set when a mid-stream fault was on as the exec arrived.
    pub(crate) cut: Option<Cut>,
}

/// How a faulted exec ends after its first chunk of stdout, never sending a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// Drop the TCP connection with no close frame (`Fault::DropMidStream`).
    Drop,
    /// Send a normal close frame (`Fault::CloseMidStream`).
    Close,
}

/// How the pump loop ended.
enum Outcome {
    /// The command exited and its output was drained: report the status.
    Exited(ExitStatus),
    /// The client went away or the server is shutting down: nobody to report to.
    Abandoned,
    /// A mid-stream fault ends the session without a status.
    Cut(Cut),
}

/// Kills the process group when dropped while armed, so no path (client gone, task aborted,
/// runtime shut down) leaves the command or its children running. A terminal's shell leads its
/// own session and puts each job in a process group of its own, so there the whole session goes:
/// a job that ignores the hangup (SIGHUP ignored by whoever started the tests, and inherited)
/// or a shell killed before it could pass the hangup on leaves nothing behind either.
struct GroupKiller {
    leader: Option<Pid>,
    whole_session: bool,
}

impl GroupKiller {
    fn kill(&mut self) {
        let Some(leader) = self.leader.take() else { return };
        let _ = killpg(leader, Signal::SIGKILL);
        if self.whole_session {
            for pid in session_members(leader) {
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
    }
}

/// Every live process whose session is the one `leader` started (even after the leader is gone).
fn session_members(leader: Pid) -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .map(Pid::from_raw)
        .filter(|&pid| getsid(Some(pid)) == Ok(leader))
        .collect()
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(crate) async fn run(
    mut socket: WebSocket,
    request: ExecRequest,
    mut shutdown: watch::Receiver<bool>,
    _count: ExecCount,
) {
    let Spawned { mut child, pty } = match spawn(&request) {
        Ok(spawned) => spawned,
        Err(error) => {
            // Shaped like the runtime's refusal to start the process (missing binary, no permission).
            let message = format!(
                "Internal error occurred: error executing command in container {}: failed to exec in container: \
                 starting container process caused: exec: {:?}: {error}",
                request.container,
                request.argv.first().map_or("", String::as_str)
            );
            let status = json!({
                "metadata": {},
                "status": "Failure",
                "reason": "InternalError",
                "message": message,
                "code": 500,
            });
            finish(&mut socket, &status).await;
            return;
        }
    };
    let mut killer = GroupKiller {
        leader: child.id().and_then(|pid| i32::try_from(pid).ok()).map(Pid::from_raw),
        whole_session: request.tty,
    };
    // Like the kubelet: one empty frame on the lowest channel we will write, to say "connected".
    let hello = if request.stdout {
        STDOUT
    } else if request.stderr {
        STDERR
    } else {
        STATUS
    };
    let outcome = if socket.send(Message::binary(vec![hello])).await.is_err() {
        Outcome::Abandoned
    } else {
        pump(&mut socket, &mut child, pty, &request, &mut shutdown).await
    };
    match outcome {
        Outcome::Exited(exit) => {
            // The command finished on its own: whatever it left in the background is its business,
            // as in a real container, so the group is not killed.
            killer.leader = None;
            finish(&mut socket, &status_json(&request.argv, exit)).await;
        }
        ended => {
            if request.tty {
                // As a container runtime does: the terminal is gone (this side closed with the
                // pump), so the kernel hangs up the shell, which hangs up its jobs; then the rest.
                let _ = tokio::time::timeout(HANGUP_GRACE, child.wait()).await;
            }
            killer.kill();
            // Reap it, so the test that watches for leftovers sees no zombie of ours.
            let _ = child.wait().await;
            if matches!(ended, Outcome::Cut(Cut::Close)) {
                let _ = socket.send(Message::Close(None)).await;
            }
            // Otherwise dropping the socket without a close frame is what a dropped connection
            // looks like to the client.
            drop(socket);
        }
    }
}

/// A started command and, on a terminal, the terminal's side this server holds.
struct Spawned {
    child: Child,
    pty: Option<pty_process::Pty>,
}

fn spawn(request: &ExecRequest) -> std::io::Result<Spawned> {
    let pipe_or_null = |wanted: bool| if wanted { Stdio::piped() } else { Stdio::null() };
    let (program, args) = request.argv.split_first().ok_or_else(|| std::io::Error::other("empty command"))?;
    if request.tty {
        let (pty, pts) = pty_process::open().map_err(std::io::Error::other)?;
        pty.resize(pty_process::Size::new(24, 80)).map_err(std::io::Error::other)?;
        // Its own session (so its own process group), the terminal as its controlling one.
        let child = pty_process::Command::new(program)
            .args(args)
            .current_dir(&request.dir)
            .kill_on_drop(true)
            .spawn(pts)
            .map_err(std::io::Error::other)?;
        return Ok(Spawned { child, pty: Some(pty) });
    }
    let child = Command::new(program)
        .args(args)
        .current_dir(&request.dir)
        .stdin(pipe_or_null(request.stdin))
        .stdout(pipe_or_null(request.stdout))
        .stderr(pipe_or_null(request.stderr))
        // Its own process group, so a client that leaves takes the command's children with it.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    Ok(Spawned { child, pty: None })
}

/// Streams output and client input until the command has exited and both pipes hit EOF.
async fn pump(
    socket: &mut WebSocket,
    child: &mut Child,
    pty: Option<pty_process::Pty>,
    request: &ExecRequest,
    shutdown: &mut watch::Receiver<bool>,
) -> Outcome {
    type Reader = Box<dyn AsyncRead + Unpin + Send>;
    let (mut stdout, mut stderr, mut stdin): (Option<Reader>, Option<Reader>, _) = match pty {
        Some(pty) => {
            let (read, write) = pty.into_split();
            let resize = |pty: &pty_process::OwnedWritePty, size: pty_process::Size| {
                let _ = pty.resize(size);
            };
            (Some(Box::new(TerminalOutput(read))), None, Some(stdin_writer(write, resize)))
        }
        None => (
            child.stdout.take().map(|pipe| Box::new(pipe) as Reader),
            child.stderr.take().map(|pipe| Box::new(pipe) as Reader),
            child.stdin.take().map(|pipe| stdin_writer(pipe, |_, _| {})),
        ),
    };
    let mut out_buf = vec![0u8; 16 * 1024];
    let mut err_buf = vec![0u8; 16 * 1024];
    let mut exit = None;
    loop {
        if let (None, None, Some(status)) = (&stdout, &stderr, exit) {
            // Under `DropMidStream` a command that printed nothing still loses its status.
            return request.cut.map_or(Outcome::Exited(status), Outcome::Cut);
        }
        tokio::select! {
            read = read_some(&mut stdout, &mut out_buf) => {
                let Some(frame) = frame(STDOUT, read, &out_buf, &mut stdout) else { continue };
                if socket.send(Message::binary(frame)).await.is_err() {
                    return Outcome::Abandoned;
                }
                if let Some(cut) = request.cut {
                    return Outcome::Cut(cut);
                }
            }
            read = read_some(&mut stderr, &mut err_buf) => {
                let Some(frame) = frame(STDERR, read, &err_buf, &mut stderr) else { continue };
                if socket.send(Message::binary(frame)).await.is_err() {
                    return Outcome::Abandoned;
                }
            }
            status = child.wait(), if exit.is_none() => match status {
                Ok(status) => exit = Some(status),
                Err(_) => return Outcome::Abandoned,
            },
            message = socket.recv() => match message {
                Some(Ok(Message::Binary(data))) => match (data.first(), data.get(1)) {
                    (Some(&STDIN), _) => {
                        if let Some(writer) = &stdin {
                            // A failed send means the command closed its stdin; later input is moot.
                            let _ = writer.send(Input::Bytes(data.slice(1..)));
                        }
                    }
                    (Some(&CLOSE), Some(&STDIN)) if request.protocol == Protocol::V5 => stdin = None,
                    (Some(&RESIZE), _) => {
                        // Without a terminal, or malformed: nothing to resize, as on a kubelet.
                        if let (Some(writer), Some(size)) = (&stdin, terminal_size(&data[1..])) {
                            let _ = writer.send(Input::Resize(size));
                        }
                    }
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Outcome::Abandoned,
                Some(Ok(_)) => {}
            },
            _ = stopped(shutdown) => return Outcome::Abandoned,
        }
    }
}

/// Turns one read into a channel frame; on EOF or error it closes that pipe and returns `None`.
fn frame<R>(channel: u8, read: std::io::Result<usize>, buf: &[u8], pipe: &mut Option<R>) -> Option<Vec<u8>> {
    match read {
        Ok(n) if n > 0 => {
            let mut frame = Vec::with_capacity(n + 1);
            frame.push(channel);
            frame.extend_from_slice(&buf[..n]);
            Some(frame)
        }
        _ => {
            *pipe = None;
            None
        }
    }
}

/// Reads from a pipe that is still open; a closed one never completes, so `select!` skips it.
async fn read_some<R: AsyncRead + Unpin>(pipe: &mut Option<R>, buf: &mut [u8]) -> std::io::Result<usize> {
    match pipe {
        Some(pipe) => pipe.read(buf).await,
        None => std::future::pending().await,
    }
}

/// What the client sends a command: stdin bytes, or (on a terminal) a new size.
enum Input {
    Bytes(axum::body::Bytes),
    Resize(pty_process::Size),
}

/// A resize frame's body: `{"Width":…,"Height":…}`, as kube-rs and kubectl send it.
fn terminal_size(body: &[u8]) -> Option<pty_process::Size> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Size {
        width: u16,
        height: u16,
    }
    let size: Size = serde_json::from_slice(body).ok()?;
    Some(pty_process::Size::new(size.height, size.width))
}

/// Feeds stdin from its own task, so a command that is not reading its input can never stall
/// the loop that drains its output; resizes go the same way, in order with the keystrokes.
/// Dropping the sender closes the command's stdin.
fn stdin_writer<W: AsyncWrite + Unpin + Send + 'static>(
    mut pipe: W,
    resize: impl Fn(&W, pty_process::Size) + Send + 'static,
) -> mpsc::UnboundedSender<Input> {
    let (sender, mut receiver) = mpsc::unbounded_channel::<Input>();
    tokio::spawn(async move {
        while let Some(input) = receiver.recv().await {
            match input {
                Input::Bytes(chunk) => {
                    if pipe.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
                Input::Resize(size) => resize(&pipe, size),
            }
        }
    });
    sender
}

/// A terminal's output: reading it after the command's side has closed fails with EIO on Linux,
/// which is its end of file.
struct TerminalOutput(pty_process::OwnedReadPty);

impl AsyncRead for TerminalOutput {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match std::pin::Pin::new(&mut self.0).poll_read(cx, buf) {
            std::task::Poll::Ready(Err(error)) if error.raw_os_error() == Some(nix::libc::EIO) => {
                std::task::Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

/// The kubelet's status for an exit: `Success`, or `NonZeroExitCode` with an `ExitCode` cause.
fn status_json(argv: &[String], exit: ExitStatus) -> Value {
    use std::os::unix::process::ExitStatusExt;
    if exit.success() {
        return json!({ "metadata": {}, "status": "Success" });
    }
    // A signal death reads as 128+signal, as a shell (and a container runtime) reports it.
    let code = exit.code().or_else(|| exit.signal().map(|signal| 128 + signal)).unwrap_or(1);
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
            argv.join(" ")
        ),
        "reason": "NonZeroExitCode",
        "details": { "causes": [{ "reason": "ExitCode", "message": code.to_string() }] },
    })
}

/// Sends the status on channel 3 and closes the socket normally.
async fn finish(socket: &mut WebSocket, status: &Value) {
    let mut frame = vec![STATUS];
    frame.extend_from_slice(status.to_string().as_bytes());
    if socket.send(Message::binary(frame)).await.is_ok() {
        let _ = socket.send(Message::Close(None)).await;
    }
}
