//! The helper's side of its socket to the server: taking it over from stdin, reading the
//! configuration that comes first, and receiving requests with the descriptors they carry.

use std::{
    io::{IoSliceMut, Read as _},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::net::UnixStream,
    },
};

use anyhow::{Context as _, bail};
use nix::{
    errno::Errno,
    fcntl::OFlag,
    sys::socket::{ControlMessageOwned, MsgFlags, recvmsg},
};

use super::protocol::{FrameReader, HelperConfig, MAX_FDS};

/// The socket the server handed over as stdin, moved off fd 0 (which becomes `/dev/null`).
pub(super) fn control_socket() -> anyhow::Result<UnixStream> {
    let is_socket = nix::sys::stat::fstat(std::io::stdin()).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFSOCK);
    if !is_socket {
        bail!("this mode is for rdev-api itself, which starts it with a socket as stdin");
    }
    // SAFETY: duplicating fd 0, which is open; the copy is owned by the returned socket.
    let raw = unsafe { libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error()).context("moving the control socket");
    }
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    let control = unsafe { UnixStream::from_raw_fd(raw) };
    let null = nix::fcntl::open("/dev/null", OFlag::O_RDWR, nix::sys::stat::Mode::empty())?;
    // SAFETY: both descriptors are open.
    unsafe { libc::dup2(null.as_raw_fd(), 0) };
    Ok(control)
}

/// The first frame from the server: what every command needs to know.
pub(super) fn read_config(control: &UnixStream, frames: &mut FrameReader) -> anyhow::Result<HelperConfig> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Some(config) = frames.next()? {
            return Ok(config);
        }
        let n = (&*control).read(&mut buf).context("reading the configuration")?;
        if n == 0 {
            bail!("the server closed the socket before sending the configuration");
        }
        frames.push(&buf[..n], []);
    }
}

/// Receives bytes and any descriptors sent with them.
pub(super) fn receive(fd: RawFd, buf: &mut [u8]) -> anyhow::Result<(usize, Vec<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let message = loop {
        match recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
            Err(Errno::EINTR) => continue,
            result => break result.context("reading from the server")?,
        }
    };
    let mut fds = Vec::new();
    for cmsg in message.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            // SAFETY: the kernel just installed these descriptors in this process.
            fds.extend(raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    if message.flags.contains(MsgFlags::MSG_CTRUNC) {
        bail!("the server sent more descriptors than a request may carry");
    }
    Ok((message.bytes, fds))
}
