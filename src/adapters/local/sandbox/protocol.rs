//! The wire between the server and its sandbox helper: length-prefixed JSON frames over a Unix
//! stream socket. File descriptors travel as `SCM_RIGHTS` with the first bytes of the frame
//! they belong to; the kernel never merges them into another frame's bytes, so the receiver
//! hands them out in frame order.
//!
//! Both ends are the same binary, so the format needs no versioning.

use std::{collections::VecDeque, os::fd::OwnedFd, path::PathBuf};

use serde::{Deserialize, Serialize};

/// The argument that makes the `rdev-api` binary run as the sandbox helper.
pub const HELPER_ARG: &str = "__sandbox-helper";

/// Largest frame either side accepts: a command, its environment and some framing.
pub const MAX_FRAME: usize = 4 << 20;

/// Most descriptors one frame may carry (stdin, stdout, stderr and one side channel).
pub const MAX_FDS: usize = 4;

/// What the helper needs to know once, sent as the first frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelperConfig {
    /// The projects folder, canonical: each project is a folder directly inside.
    pub projects_root: PathBuf,
    /// Confine commands (namespaces, Landlock, no capabilities); `false` only with
    /// `RDEV_SANDBOX=off`, where commands just run in their own session.
    pub confine: bool,
    /// Folders and files commands may read and execute (system software).
    pub read_only: Vec<PathBuf>,
    /// Device files commands may read and write (`/dev/null`, terminals…).
    pub devices: Vec<PathBuf>,
    /// Covered in each command's mount namespace (an empty folder, or `/dev/null` for a file),
    /// so that even where the rules above would let them through they show nothing.
    pub hidden: Vec<PathBuf>,
    /// Symbolic links of the host's `/` (`/bin` → `usr/bin`…) made again in the commands' root.
    pub links: Vec<(PathBuf, PathBuf)>,
    /// The network commands are in.
    pub network: Network,
    /// Per-command cgroup limits; `None` with `RDEV_SANDBOX_LIMITS=off`.
    pub limits: Option<Limits>,
    /// Size of each command's private `/tmp` and `/dev/shm`.
    pub tmp_bytes: u64,
    /// The host uid and gid commands of a root server run as.
    pub uid: u32,
}

/// `RDEV_SANDBOX_NETWORK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// A network namespace per project: its own loopback, nothing of the host's.
    None,
    /// The same, with a user-space NAT to public addresses only.
    Public,
    /// The host's network.
    Host,
}

/// What one command may take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory, page cache and tmpfs pages included.
    pub memory_bytes: u64,
    /// Processes and threads.
    pub pids: u64,
    /// CPU time as thousandths of a CPU; `None` for all of them.
    pub cpu_millis: Option<u64>,
}

/// A request to the helper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToHelper {
    Spawn(Spawn),
    /// Kills the command and everything it started; its `Exited` follows.
    Kill {
        id: u64,
    },
}

/// One command to start. Its descriptors come with the frame: `stdin` (when `has_stdin`), then
/// stdout and stderr, then any side channels, installed as fds 0, 1, 2, 3… of the command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spawn {
    pub id: u64,
    /// The project's folder name under `projects_root`.
    pub project: String,
    /// Relative to the project folder, already checked by the server to stay inside it.
    pub workdir: Option<String>,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub has_stdin: bool,
    /// How many descriptors the frame carries.
    pub fds: usize,
    /// A terminal: the frame carries one socket instead. The command's init opens a terminal
    /// in the command's own devpts, sends its master back over that socket (`SCM_RIGHTS`, with
    /// one byte), and makes the other side the shell's fds 0-2 and controlling terminal.
    pub tty: bool,
}

/// What the helper reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromHelper {
    /// Sent once, after the configuration: what confinement this kernel gives.
    Ready(Capabilities),
    /// The helper cannot confine commands as configured.
    Unusable { reason: String },
    /// The command ended (and, confined, every process it started with it).
    Exited {
        id: u64,
        exit_code: i32,
        failure: Option<SpawnFailure>,
        /// The limit that stopped the command, in words for its answer.
        limit: Option<String>,
    },
}

/// The confinement the helper could set up, for logs and `/ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// The kernel's Landlock ABI version; 0 without Landlock.
    pub landlock_abi: i32,
    /// Commands run in a user namespace (the server is not root).
    pub user_namespace: bool,
    pub confined: bool,
    /// How limits are enforced ("cgroup v1", "cgroup v2"); `None` without limits.
    pub limits: Option<String>,
}

/// Why a command did not start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnFailure {
    pub kind: FailureKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The project folder is gone.
    ProjectMissing,
    /// The working folder is gone.
    WorkdirMissing,
    /// Anything else (a bug, or a system without the needed kernel features).
    Internal,
}

/// Encodes one frame: the length, then the JSON.
pub fn encode(message: &impl Serialize) -> Vec<u8> {
    let json = serde_json::to_vec(message).unwrap_or_default();
    let mut frame = Vec::with_capacity(4 + json.len());
    frame.extend_from_slice(&u32::try_from(json.len()).unwrap_or(u32::MAX).to_le_bytes());
    frame.extend_from_slice(&json);
    frame
}

/// Collects received bytes and descriptors and yields whole frames.
#[derive(Default)]
pub struct FrameReader {
    bytes: Vec<u8>,
    fds: VecDeque<OwnedFd>,
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("frame is not valid: {0}")]
    Invalid(#[from] serde_json::Error),
}

impl FrameReader {
    pub fn push(&mut self, bytes: &[u8], fds: impl IntoIterator<Item = OwnedFd>) {
        self.bytes.extend_from_slice(bytes);
        self.fds.extend(fds);
    }

    /// The next complete frame, if one has arrived.
    pub fn next<T: for<'de> Deserialize<'de>>(&mut self) -> Result<Option<T>, FrameError> {
        let Some(header) = self.bytes.first_chunk::<4>() else { return Ok(None) };
        let len = u32::from_le_bytes(*header) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        if self.bytes.len() < 4 + len {
            return Ok(None);
        }
        let message = serde_json::from_slice(&self.bytes[4..4 + len]);
        self.bytes.drain(..4 + len);
        Ok(Some(message?))
    }

    /// The descriptors of the frame just read, in the order they were sent.
    pub fn take_fds(&mut self, count: usize) -> Vec<OwnedFd> {
        let count = count.min(self.fds.len());
        self.fds.drain(..count).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_anywhere_come_back_whole_and_in_order() {
        let first = ToHelper::Kill { id: 7 };
        let second = ToHelper::Spawn(Spawn {
            id: 8,
            project: "hello".into(),
            workdir: Some("sub dir".into()),
            argv: vec!["/bin/sh".into(), "-c".into(), "echo 'a b'".into()],
            env: vec![("A".into(), "x\ny".into())],
            has_stdin: false,
            fds: 2,
            tty: false,
        });
        let bytes = [encode(&first), encode(&second)].concat();
        let mut reader = FrameReader::default();
        let mut seen = Vec::new();
        for byte in bytes {
            reader.push(&[byte], []);
            while let Some(message) = reader.next::<ToHelper>().unwrap() {
                seen.push(message);
            }
        }
        assert_eq!(seen, [first, second]);
    }

    #[test]
    fn an_oversized_length_is_refused_before_it_is_buffered() {
        let mut reader = FrameReader::default();
        reader.push(&u32::MAX.to_le_bytes(), []);
        assert!(matches!(reader.next::<ToHelper>(), Err(FrameError::TooLarge(_))));
    }
}
