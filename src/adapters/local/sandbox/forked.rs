//! Short-lived children of the helper that make a namespace (or wait on one) and hand back a
//! descriptor or a report, so the helper itself never leaves its own namespaces.

use std::{
    io::Write as _,
    os::fd::{AsRawFd, OwnedFd},
};

use nix::{
    fcntl::OFlag,
    sched::{CloneFlags, setns},
    unistd::{ForkResult, fork},
};

fn send_fd(socket: &OwnedFd, fd: &OwnedFd) -> Result<(), String> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let fds = [fd.as_raw_fd()];
    let iov = [std::io::IoSlice::new(b"n")];
    sendmsg::<()>(socket.as_raw_fd(), &iov, &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), None)
        .map(drop)
        .map_err(|e| e.to_string())
}

fn receive_fd(socket: &OwnedFd) -> Result<OwnedFd, String> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!(std::os::fd::RawFd);
    let message = recvmsg::<()>(socket.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(|e| e.to_string())?;
    for cmsg in message.cmsgs().map_err(|e| e.to_string())? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg
            && let Some(fd) = fds.first()
        {
            // SAFETY: a descriptor the kernel just installed in this process.
            return Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(*fd) });
        }
    }
    Err("no descriptor came back".into())
}

/// Runs `work` in a forked child of the helper (in `namespace`'s network when given) and waits
/// for it; its `Err` comes back as the child's report on a pipe.
pub fn in_child(namespace: Option<&OwnedFd>, work: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| e.to_string())?;
    // SAFETY: the helper is single-threaded; the child does its work and `_exit`s.
    match unsafe { fork() }.map_err(|e| e.to_string())? {
        ForkResult::Child => {
            drop(read);
            let entered = match namespace {
                Some(namespace) => setns(namespace, CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string()),
                None => Ok(()),
            };
            let code = match entered.and_then(|()| work()) {
                Ok(()) => 0,
                Err(why) => {
                    let _ = std::fs::File::from(write).write_all(why.as_bytes());
                    1
                }
            };
            // SAFETY: ends the child without running the helper's destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(write);
            let mut why = String::new();
            let _ = std::io::Read::read_to_string(&mut std::fs::File::from(read), &mut why);
            match nix::sys::wait::waitpid(child, None) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => Ok(()),
                _ if !why.is_empty() => Err(why),
                other => Err(format!("the helper's child ended with {other:?}")),
            }
        }
    }
}

/// Runs `make` in a forked child of the helper and hands back the descriptor it returns (a
/// namespace made there, which lives on through it after the child's end).
pub fn handed_back(make: impl FnOnce() -> Result<OwnedFd, String>) -> Result<OwnedFd, String> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    let (ours, theirs) =
        socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC).map_err(|e| e.to_string())?;
    in_child(None, || send_fd(&theirs, &make()?))?;
    drop(theirs);
    receive_fd(&ours)
}
