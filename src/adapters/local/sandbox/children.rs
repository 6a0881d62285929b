//! What runs in the helper's children, between `clone` and `exec`: a command's init (PID 1 of
//! its namespaces) and its shell. They run on copies of the helper's memory, or (the shell)
//! borrow the init's, and end with `_exit` or `exec`, never returning into the helper's loop.

use std::{
    ffi::CString,
    os::fd::{AsRawFd, OwnedFd, RawFd},
    path::PathBuf,
};

use nix::{
    errno::Errno,
    fcntl::OFlag,
    sched::CloneFlags,
    sys::stat::Mode,
    sys::{
        prctl,
        signal::{SigSet, SigmaskHow, Signal, sigprocmask},
        wait::{WaitStatus, waitpid},
    },
    unistd::Pid,
};

use super::{
    cgroups,
    confine::{self, Grant},
    identity,
    protocol::FailureKind,
    tree,
};

/// Stack of the shell's process between its start and `exec` (a few system calls).
pub(super) const SHELL_STACK_BYTES: usize = 64 << 10;

/// A command ready to start: everything the children need, prepared before the fork.
pub(super) struct Plan {
    pub id: u64,
    pub project_dir: PathBuf,
    pub workdir: Option<PathBuf>,
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
    pub fds: Vec<OwnedFd>,
    pub has_stdin: bool,
    pub tty: bool,
}

/// What a confined command's init gets besides its plan.
pub(super) struct Start<'a> {
    /// The cgroup it moves itself into, first thing.
    pub cgroup: Option<&'a cgroups::Slot>,
    /// The project's network namespace, which it enters.
    pub network: Option<RawFd>,
}

/// What a command's init needs of the helper.
pub(super) struct Context<'a> {
    /// Descriptors only the helper uses, closed first.
    pub helper_only: [RawFd; 2],
    /// Where a child says why a command did not start.
    pub report: RawFd,
    pub read_only: &'a [Grant],
    pub devices: &'a [Grant],
    /// Who the command is on the host.
    pub identity: &'a identity::Identity,
    /// The mount namespace of the commands' root (see `tree::template`).
    pub template: &'a OwnedFd,
    /// tmpfs options of `/tmp` and `/dev/shm`.
    pub tmp_options: &'a str,
}

/// The namespace a confined command's init is cloned into; it makes (or joins) the others
/// itself, so their cost is not the helper's: mount (see `tree::enter`), IPC, network, user.
pub(super) fn namespaces() -> CloneFlags {
    CloneFlags::CLONE_NEWPID
}

/// Everything a command's init does before the shell: moves into its cgroup, makes or joins its
/// namespaces, enters its own root, becomes who it runs as, and confines itself (the shell
/// inherits it all).
pub(super) fn setup(
    context: &Context<'_>,
    project_dir: &std::path::Path,
    start: &Start<'_>,
) -> Result<(), (FailureKind, String)> {
    let internal = |why: String| (FailureKind::Internal, why);
    if let Some(cgroup) = start.cgroup {
        cgroup.attach_self().map_err(internal)?;
    }
    nix::sched::unshare(CloneFlags::CLONE_NEWIPC).map_err(|e| internal(format!("new IPC namespace: {e}")))?;
    if let Some(network) = start.network {
        // SAFETY: the helper's descriptor of the project's network namespace, open while it runs.
        let network = unsafe { std::os::fd::BorrowedFd::borrow_raw(network) };
        nix::sched::setns(network, CloneFlags::CLONE_NEWNET)
            .map_err(|e| internal(format!("entering the project's network: {e}")))?;
    }
    let project = tree::detached(project_dir).map_err(|e| {
        let kind =
            if e.kind() == std::io::ErrorKind::NotFound { FailureKind::ProjectMissing } else { FailureKind::Internal };
        (kind, format!("opening the project folder: {e}"))
    })?;
    context.identity.project_mount(&project).map_err(|e| internal(format!("mounting the project: {e}")))?;
    let private = tree::enter(context.template, &project, project_dir, context.tmp_options).map_err(|error| {
        let kind = if error.project_missing { FailureKind::ProjectMissing } else { FailureKind::Internal };
        (kind, error.message)
    })?;
    // Last, since it gives up the right to mount: who the command is on the host.
    context.identity.enter().map_err(internal)?;
    // A change of credentials cleared it. Should the helper die before this line, its end of
    // the server's socket still closes, and the server starts a new helper.
    let _ = prctl::set_pdeathsig(Signal::SIGKILL);
    // A user namespace entered gives a full set of capabilities: none may remain.
    confine::drop_bounding_set()
        .and_then(|()| prctl::set_dumpable(false).map_err(|e| format!("making the init undumpable: {e}")))
        .and_then(|()| confine::drop_capabilities())
        .and_then(|()| confine::restrict(context.read_only, context.devices, &private))
        .map_err(internal)
}

/// The command's init: PID 1 of its namespaces. It sets up (see `setup`), starts the shell and
/// returns its exit status.
///
/// The shell is started `vfork`-style (`CLONE_VM | CLONE_VFORK`): it borrows this process's
/// memory until its `exec`, so no second copy of the address space is made per command. The
/// init is in the shell's Landlock domain then, but not dumpable, so the shell (which holds no
/// capability) still cannot read its memory, a copy of the helper's.
pub(super) fn init(context: &Context<'_>, plan: &Plan, start: &Start<'_>, shell_stack: &mut [u8]) -> isize {
    reset_signals();
    let _ = prctl::set_pdeathsig(Signal::SIGKILL);
    close_raw(&context.helper_only);
    let report = context.report;
    let fail = |kind: FailureKind, message: &str| {
        write_report(report, plan.id, kind, message);
        255
    };
    if let Err((kind, why)) = setup(context, &plan.project_dir, start) {
        return fail(kind, &why);
    }
    let fds = match shell_fds(plan) {
        Ok(fds) => fds,
        Err(why) => return fail(FailureKind::Internal, &why),
    };
    let shell = Box::new(|| {
        let (kind, why) = shell(plan, &fds);
        write_report(report, plan.id, kind, &why);
        127
    });
    // SAFETY: CLONE_VFORK suspends this process until the child has exec'd or exited, so the
    // memory they share is used by one of them at a time; the child runs on `shell_stack`.
    let started = unsafe {
        nix::sched::clone(shell, shell_stack, CloneFlags::CLONE_VM | CloneFlags::CLONE_VFORK, Some(libc::SIGCHLD))
    };
    // Only the shell holds the command's descriptors now, so they close with it. (The plan's
    // belong to the helper's memory, of which this is a copy: closed, never dropped, here.)
    close_raw(&plan.fds.iter().map(AsRawFd::as_raw_fd).collect::<Vec<_>>());
    drop(fds);
    match started {
        Ok(child) => wait_for(child),
        Err(error) => fail(FailureKind::Internal, &format!("cannot start the shell: {error}")),
    }
}

/// Waits for the shell, reaping any orphan that was handed to this init meanwhile.
fn wait_for(shell: Pid) -> isize {
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == shell => return code as isize,
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == shell => return 128 + signal as isize,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => return 255,
        }
    }
}

/// The descriptors the shell gets as 0, 1, 2…: the plan's, or for a terminal three copies of
/// the other side of one opened here (see `open_terminal`).
pub(super) fn shell_fds(plan: &Plan) -> Result<Vec<OwnedFd>, String> {
    if !plan.tty {
        return Ok(Vec::new());
    }
    let [socket] = plan.fds.as_slice() else { return Err("a terminal needs one socket".into()) };
    let other_side = open_terminal(socket)?;
    let copy = |fd: &OwnedFd| fd.try_clone().map_err(|e| format!("sharing the terminal: {e}"));
    Ok(vec![copy(&other_side)?, copy(&other_side)?, other_side])
}

/// Opens a pseudo-terminal in this process's devpts (for a confined command, its own) and sends
/// its master to the server over `socket`; returns the other side.
fn open_terminal(socket: &OwnedFd) -> Result<OwnedFd, String> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let failed = |what: &str, e: std::io::Error| format!("opening a terminal ({what}): {e}");
    let master = nix::fcntl::open("/dev/ptmx", OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| failed("/dev/ptmx", e.into()))?;
    let unlock: libc::c_int = 0;
    // SAFETY: ioctls on the master just opened; `unlock` outlives the call.
    let other_side = unsafe {
        if libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) != 0 {
            return Err(failed("unlocking", std::io::Error::last_os_error()));
        }
        libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC)
    };
    if other_side < 0 {
        return Err(failed("its other side", std::io::Error::last_os_error()));
    }
    // SAFETY: the kernel just returned this descriptor.
    let other_side = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(other_side) };
    let fds = [master.as_raw_fd()];
    let iov = [std::io::IoSlice::new(b"t")];
    sendmsg::<()>(socket.as_raw_fd(), &iov, &[ControlMessage::ScmRights(&fds)], MsgFlags::MSG_NOSIGNAL, None)
        .map_err(|e| failed("handing it to the server", e.into()))?;
    Ok(other_side)
}

/// The shell's process, from its start to `exec`: only system calls on what the plan holds.
/// Returns only with why it could not run.
pub(super) fn shell(plan: &Plan, terminal: &[OwnedFd]) -> (FailureKind, String) {
    let internal = |why: String| (FailureKind::Internal, why);
    if let Err(error) = nix::unistd::setsid() {
        return internal(format!("setsid: {error}"));
    }
    let fds = if plan.tty { terminal } else { &plan.fds };
    if let Err(why) = confine::install_fds(fds, plan.has_stdin, plan.tty) {
        return internal(why);
    }
    if let Err(error) = nix::unistd::chdir(&plan.project_dir) {
        return (FailureKind::ProjectMissing, format!("entering the project folder: {error}"));
    }
    if let Some(workdir) = &plan.workdir
        && let Err(error) = nix::unistd::chdir(workdir)
    {
        return (FailureKind::WorkdirMissing, format!("entering {}: {error}", workdir.display()));
    }
    internal(confine::exec(&plan.argv, &plan.env))
}

/// Signals as a fresh process has them: none blocked (the helper blocks SIGCHLD) and every
/// disposition default (the Rust runtime ignores SIGPIPE, which a shell pipeline must not).
pub(super) fn reset_signals() {
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    for signal in 1..32 {
        // SAFETY: resetting dispositions; SIGKILL and SIGSTOP are refused harmlessly.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
    }
}

fn close_raw(fds: &[RawFd]) {
    for fd in fds {
        // SAFETY: closes this process's copy; the owner in the parent is unaffected.
        unsafe { libc::close(*fd) };
    }
}

/// One line, in one `write` (so lines of concurrent children never mix).
pub(super) fn write_report(fd: RawFd, id: u64, kind: FailureKind, message: &str) {
    let kind = match kind {
        FailureKind::ProjectMissing => "project_missing",
        FailureKind::WorkdirMissing => "workdir_missing",
        FailureKind::Internal => "internal",
    };
    let message: String = message.chars().map(|c| if c.is_control() { ' ' } else { c }).take(2000).collect();
    let line = format!("{id}\t{kind}\t{message}\n");
    // SAFETY: writes a buffer to an open descriptor.
    unsafe { libc::write(fd, line.as_ptr().cast(), line.len()) };
}
