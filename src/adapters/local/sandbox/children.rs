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
    sched::CloneFlags,
    sys::{
        prctl,
        signal::{SigSet, SigmaskHow, Signal, sigprocmask},
        wait::{WaitStatus, waitpid},
    },
    unistd::Pid,
};

use super::{
    confine::{self, Grant},
    protocol::FailureKind,
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

/// What a command's init needs of the helper.
pub(super) struct Context<'a> {
    /// Descriptors only the helper uses, closed first.
    pub helper_only: [RawFd; 2],
    /// Where a child says why a command did not start.
    pub report: RawFd,
    pub read_only: &'a [Grant],
    pub devices: &'a [Grant],
}

pub(super) fn namespaces() -> CloneFlags {
    CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS
}

/// The command's init: PID 1 of its namespaces. It builds the mounts, confines itself (the
/// shell inherits it), starts the shell and returns its exit status.
///
/// The shell is started `vfork`-style (`CLONE_VM | CLONE_VFORK`): it borrows this process's
/// memory until its `exec`, so no second copy of the address space is made per command. The
/// init is in the shell's Landlock domain then, but not dumpable, so the shell (which holds no
/// capability) still cannot read its memory, a copy of the helper's.
pub(super) fn init(context: &Context<'_>, plan: &Plan, shell_stack: &mut [u8]) -> isize {
    reset_signals();
    let _ = prctl::set_pdeathsig(Signal::SIGKILL);
    close_raw(&context.helper_only);
    let report = context.report;
    let fail = |kind: FailureKind, message: &str| {
        write_report(report, plan.id, kind, message);
        255
    };
    let private = match confine::prepare_mounts(&plan.project_dir) {
        Ok(private) => private,
        Err(error) => {
            let kind = if error.project_missing { FailureKind::ProjectMissing } else { FailureKind::Internal };
            return fail(kind, &error.message);
        }
    };
    let confined = prctl::set_dumpable(false)
        .map_err(|e| format!("making the init undumpable: {e}"))
        .and_then(|()| confine::drop_capabilities())
        .and_then(|()| confine::restrict(context.read_only, context.devices, &private));
    if let Err(why) = confined {
        return fail(FailureKind::Internal, &why);
    }
    let shell = Box::new(|| {
        let (kind, why) = shell(plan);
        write_report(report, plan.id, kind, &why);
        127
    });
    // SAFETY: CLONE_VFORK suspends this process until the child has exec'd or exited, so the
    // memory they share is used by one of them at a time; the child runs on `shell_stack`.
    let started = unsafe {
        nix::sched::clone(shell, shell_stack, CloneFlags::CLONE_VM | CloneFlags::CLONE_VFORK, Some(libc::SIGCHLD))
    };
    // Only the shell holds the command's descriptors now, so they close with it.
    close_raw(&plan.fds.iter().map(AsRawFd::as_raw_fd).collect::<Vec<_>>());
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

/// The shell's process, from its start to `exec`: only system calls on what the plan holds.
/// Returns only with why it could not run.
pub(super) fn shell(plan: &Plan) -> (FailureKind, String) {
    let internal = |why: String| (FailureKind::Internal, why);
    if let Err(error) = nix::unistd::setsid() {
        return internal(format!("setsid: {error}"));
    }
    if let Err(why) = confine::install_fds(&plan.fds, plan.has_stdin, plan.tty) {
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
