//! The network of confined commands with `RDEV_SANDBOX_NETWORK=none`: a network namespace per
//! project, made by the helper the first time the project runs a command and kept. It has its
//! own loopback, up, and nothing else: a command's tests can serve and call `127.0.0.1`, and no
//! address of the host (its loopback, its database, its other services) is reachable. Commands
//! of one project share it, as they share the project's files.
//!
//! The helper enters the project's namespace before it starts the command's init, which
//! inherits it; the helper itself needs no network (it talks to the server over a socket pair).

use std::{collections::HashMap, os::fd::OwnedFd};

use nix::{
    fcntl::{OFlag, open},
    sched::{CloneFlags, setns, unshare},
    sys::stat::Mode,
};

#[derive(Default)]
pub struct Networks {
    by_project: HashMap<String, OwnedFd>,
}

impl Networks {
    /// Puts the helper into `project`'s network namespace, making it on first use.
    pub fn enter(&mut self, project: &str) -> Result<(), String> {
        if let Some(namespace) = self.by_project.get(project) {
            return setns(namespace, CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("entering the project's network: {e}"));
        }
        let namespace = make()?;
        self.by_project.insert(project.to_owned(), namespace);
        Ok(())
    }
}

/// A new network namespace with its loopback up; the helper is in it on return.
pub fn make() -> Result<OwnedFd, String> {
    unshare(CloneFlags::CLONE_NEWNET).map_err(|e| format!("creating a network namespace: {e}"))?;
    loopback_up()?;
    open("/proc/thread-self/ns/net", OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| format!("opening the network namespace: {e}"))
}

fn loopback_up() -> Result<(), String> {
    let failed = |what: &str| format!("bringing up the loopback ({what}): {}", std::io::Error::last_os_error());
    // SAFETY: a socket only for the interface ioctls below, closed before returning.
    let socket = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if socket < 0 {
        return Err(failed("socket"));
    }
    // SAFETY: `ifreq` is plain data; zeroed is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: the ioctls read and write `request`, which lives across both calls.
    let result = unsafe {
        if libc::ioctl(socket, libc::SIOCGIFFLAGS, &mut request) < 0 {
            Err(failed("reading its flags"))
        } else {
            request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(socket, libc::SIOCSIFFLAGS, &request) < 0 {
                Err(failed("setting its flags"))
            } else {
                Ok(())
            }
        }
    };
    // SAFETY: closes the socket made above.
    unsafe { libc::close(socket) };
    result
}
