//! Who a confined command is on the host.
//!
//! With the server as root, commands enter a user namespace made once by the helper, in which
//! they are uid and gid 0, mapped to `RDEV_SANDBOX_UID`, an id no host user has: it owns no host
//! file, so a command can read no root-only file and change nothing outside its project, and
//! what it makes gives no privilege to whoever runs it. Its project is mounted idmapped through
//! the same namespace (the server's files appear as the command's, and what the command writes
//! is the server's on disk), so nothing changes on the disk's side. The init enters it last,
//! after its mounts, which it makes as root; the mount namespace stays the host root's, so
//! nothing in it can be mounted or unmounted from inside.
//!
//! With the server as an unprivileged user, the helper already lives in a user namespace of its
//! own (see `confine::enter_user_namespace`) and commands are the server's user there: the
//! mount tree, not the uid, keeps the server's files out of their reach.

use std::os::fd::OwnedFd;

use nix::{
    fcntl::{OFlag, open},
    sched::{CloneFlags, setns},
    sys::stat::Mode,
    unistd::{Gid, Pid, Uid, setgroups, setresgid, setresuid},
};

pub enum Identity {
    /// The server is root: commands join `userns`, where 0 is `RDEV_SANDBOX_UID` on the host;
    /// project mounts are idmapped through it too.
    Stranger { userns: OwnedFd },
    /// The server is not root: commands are its user.
    ServerUser,
}

impl Identity {
    /// The identity for this helper (`root` when it runs as root).
    pub fn new(root: bool, uid: u32, stack: &mut [u8]) -> Result<Self, String> {
        if !root {
            return Ok(Identity::ServerUser);
        }
        Ok(Identity::Stranger { userns: mapped_namespace(uid, stack)? })
    }

    /// The project's detached mount: `nosuid,nodev`, and idmapped for a stranger.
    pub fn project_mount(&self, mount: &OwnedFd) -> std::io::Result<()> {
        let attributes = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
        match self {
            Identity::Stranger { userns } => {
                super::tree::set_attributes(mount, attributes | libc::MOUNT_ATTR_IDMAP, Some(userns))
            }
            Identity::ServerUser => super::tree::set_attributes(mount, attributes, None),
        }
    }

    /// In the init, after its mounts: becomes who the command is.
    pub fn enter(&self) -> Result<(), String> {
        match self {
            Identity::Stranger { userns } => {
                setns(userns, CloneFlags::CLONE_NEWUSER).map_err(|e| format!("entering the user namespace: {e}"))?;
                become_stranger()
            }
            Identity::ServerUser => Ok(()),
        }
    }
}

/// Becomes the namespace's uid and gid 0, with no supplementary group (the helper's, root's,
/// would still count on the host).
fn become_stranger() -> Result<(), String> {
    let zero_gid = Gid::from_raw(0);
    let zero_uid = Uid::from_raw(0);
    setresgid(zero_gid, zero_gid, zero_gid).map_err(|e| format!("setresgid: {e}"))?;
    setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
    setresuid(zero_uid, zero_uid, zero_uid).map_err(|e| format!("setresuid: {e}"))
}

fn write_maps(pid: Pid, uid: u32) -> Result<(), String> {
    let map = format!("0 {uid} 1\n");
    for file in ["uid_map", "gid_map"] {
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, &map).map_err(|e| format!("writing {path}: {e}"))?;
    }
    Ok(())
}

/// A user namespace mapping `0 → uid`, kept open: a child made only for it, mapped, then ended
/// (the namespace lives on through the descriptor).
fn mapped_namespace(uid: u32, stack: &mut [u8]) -> Result<OwnedFd, String> {
    let (wait_read, wait_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let child = Box::new(move || {
        let mut byte = [0u8; 1];
        let _ = nix::unistd::read(&wait_read, &mut byte);
        0
    });
    // SAFETY: single-threaded; the child only blocks on a read and exits.
    let pid = unsafe { nix::sched::clone(child, stack, CloneFlags::CLONE_NEWUSER, Some(libc::SIGCHLD)) }
        .map_err(|e| format!("creating a user namespace: {e}"))?;
    let result = write_maps(pid, uid).and_then(|()| {
        open(format!("/proc/{pid}/ns/user").as_str(), OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| format!("opening a user namespace: {e}"))
    });
    // A byte, not end of file: the child holds a copy of the writing end too.
    let _ = nix::unistd::write(&wait_write, b"x");
    let _ = nix::sys::wait::waitpid(pid, None);
    result
}
