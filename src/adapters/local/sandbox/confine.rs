//! What a confined command's processes do to themselves between the helper's `clone` and the
//! `exec` of the shell. Runs in forked children of the single-threaded helper, so it may
//! allocate; it must never return into the helper's loop (callers `_exit`).
//!
//! The layers, each closing what the others leave open:
//! - namespaces: PID (the shell's init is PID 1, so when it ends the kernel kills every process
//!   left in it), mount (its own root, see `tree`), IPC (SysV objects die with the command),
//!   network (see `network`) and, for a root server, user (see `identity`);
//! - Landlock: reads and executes only in system folders, writes only in the project and the
//!   private folders, no signals or abstract sockets out of the sandbox, no ptrace of anything
//!   outside it (which is what guards `/proc/PID/environ` and `/proc/PID/mem`);
//! - no capabilities, and `no_new_privs`; seccomp (see `seccomp`) refuses keyrings and
//!   setuid/setgid modes;
//! - cgroup limits (see `cgroups`), and bounded tmpfs for `/tmp` and `/dev/shm`.

use std::{
    ffi::CString,
    os::fd::{AsFd as _, AsRawFd, BorrowedFd, OwnedFd},
    path::Path,
};

use landlock::{
    ABI, Access, AccessFs, BitFlags, CompatLevel, Compatible, PathBeneath, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, Scope,
};
use nix::{
    fcntl::{OFlag, open},
    sys::stat::Mode,
};

use super::tree::Private;

/// The Landlock ABI whose rights are asked for; a kernel with fewer grants fewer (best effort),
/// which the helper reports at start.
const LANDLOCK_ABI: ABI = ABI::V9;

/// A path opened once, with whether it is a folder (Landlock grants files fewer rights).
pub struct Grant {
    pub fd: OwnedFd,
    pub is_dir: bool,
}

impl Grant {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let fd = open(path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())?;
        let is_dir = nix::sys::stat::fstat(&fd).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
        Ok(Self { fd, is_dir })
    }
}

/// Everything a command may touch, as Landlock rules, then enforced on this process and every
/// process it starts. Fails unless the kernel enforces at least the file system rules.
pub fn restrict(read_only: &[Grant], devices: &[Grant], private: &Private) -> Result<(), String> {
    let all = AccessFs::from_all(LANDLOCK_ABI);
    let read = AccessFs::from_read(LANDLOCK_ABI);
    let device = AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::IoctlDev | AccessFs::ReadDir;
    let file_rights = AccessFs::from_file(LANDLOCK_ABI);
    fn rule(
        g: &Grant,
        access: BitFlags<AccessFs>,
        file_rights: BitFlags<AccessFs>,
    ) -> (BorrowedFd<'_>, BitFlags<AccessFs>) {
        (g.fd.as_fd(), if g.is_dir { access } else { access & file_rights })
    }
    let rule = |g, access| rule(g, access, file_rights);
    let rules: Vec<(BorrowedFd<'_>, BitFlags<AccessFs>)> = read_only
        .iter()
        .map(|g| rule(g, read))
        .chain(devices.iter().map(|g| rule(g, device)))
        .chain(std::iter::once(rule(&private.proc, read)))
        .chain(std::iter::once(rule(&private.terminals, device)))
        .chain(private.writable.iter().map(|g| rule(g, all)))
        .chain(std::iter::once(rule(&private.project, all)))
        .collect();

    let ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(all)
        .and_then(|r| r.scope(Scope::from_all(LANDLOCK_ABI)))
        .and_then(|r| r.create())
        .map_err(|e| format!("creating the Landlock ruleset: {e}"))?;
    let ruleset = ruleset
        .add_rules(rules.into_iter().map(|(fd, access)| Ok::<_, landlock::RulesetError>(PathBeneath::new(fd, access))))
        .map_err(|e| format!("adding Landlock rules: {e}"))?;
    let status = ruleset.restrict_self().map_err(|e| format!("enforcing Landlock: {e}"))?;
    if status.ruleset == RulesetStatus::NotEnforced {
        return Err("this kernel does not enforce Landlock".into());
    }
    Ok(())
}

/// Empties the bounding set, which only `exec` consults: each command's init does it, so the
/// shell and all it runs never regain a capability (the helper keeps its own for the programs
/// it starts itself, such as pasta).
pub fn drop_bounding_set() -> Result<(), String> {
    caps::clear(None, caps::CapSet::Bounding).map_err(|e| format!("dropping the bounding set: {e}"))
}

/// Leaves no capability (effective, permitted, inheritable, ambient; the bounding set is empty
/// already) and locks the securebits so that uid 0 does not regain them at `exec`.
pub fn drop_capabilities() -> Result<(), String> {
    let bits = libc::SECBIT_NOROOT
        | libc::SECBIT_NOROOT_LOCKED
        | libc::SECBIT_NO_SETUID_FIXUP
        | libc::SECBIT_NO_SETUID_FIXUP_LOCKED
        | libc::SECBIT_KEEP_CAPS_LOCKED
        | libc::SECBIT_NO_CAP_AMBIENT_RAISE
        | libc::SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_SECUREBITS, bits as libc::c_ulong, 0, 0, 0) } != 0 {
        return Err(format!("setting securebits: {}", std::io::Error::last_os_error()));
    }
    use caps::CapSet;
    for set in [CapSet::Ambient, CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
        caps::clear(None, set).map_err(|e| format!("dropping {set:?} capabilities: {e}"))?;
    }
    Ok(())
}

/// Installs `fds` as 0, 1, 2, … (stdin is `/dev/null` when not given), marks everything above
/// close-on-exec, and gives fd 0 to the session as its terminal when asked. Allocates nothing:
/// it runs in a child that borrows its parent's memory.
pub fn install_fds(fds: &[OwnedFd], has_stdin: bool, tty: bool) -> Result<(), String> {
    // Raise every source above the targets first, so no dup2 overwrites a source not yet placed.
    const MOST: usize = super::protocol::MAX_FDS + 1;
    let top = 64 + MOST as i32;
    let mut raised = [-1; MOST];
    let mut count = 0;
    if !has_stdin {
        let null = open("/dev/null", OFlag::O_RDONLY, Mode::empty()).map_err(|e| format!("opening /dev/null: {e}"))?;
        raised[0] = std::os::fd::IntoRawFd::into_raw_fd(null);
        count = 1;
    }
    for fd in fds.iter().take(MOST - count) {
        // SAFETY: duplicating an open descriptor.
        let copy = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD, top) };
        if copy < 0 {
            return Err(format!("duplicating a descriptor: {}", std::io::Error::last_os_error()));
        }
        raised[count] = copy;
        count += 1;
    }
    let raised = &raised[..count];
    for (target, source) in (0..).zip(raised) {
        // SAFETY: both are open descriptors of this process.
        if unsafe { libc::dup2(*source, target) } < 0 {
            return Err(format!("installing fd {target}: {}", std::io::Error::last_os_error()));
        }
    }
    let first_free = raised.len() as libc::c_uint;
    // SAFETY: marks descriptors close-on-exec; closes nothing.
    unsafe { libc::syscall(libc::SYS_close_range, first_free, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    if tty {
        // SAFETY: fd 0 is the terminal the server handed over.
        if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
            return Err(format!("taking the terminal: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Replaces this process with `argv`; returns only with the reason it could not.
pub fn exec(argv: &[CString], env: &[CString]) -> String {
    match argv.first() {
        Some(program) => match nix::unistd::execve(program, argv, env) {
            Err(error) => format!("cannot run {}: {error}", program.to_string_lossy()),
        },
        None => "empty command line".into(),
    }
}

/// The kernel's Landlock ABI version, 0 without Landlock.
pub(super) fn landlock_abi() -> i32 {
    const VERSION: libc::c_uint = 1; // LANDLOCK_CREATE_RULESET_VERSION
    // SAFETY: the version query takes no pointers.
    let version = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, std::ptr::null::<u8>(), 0, VERSION) };
    i32::try_from(version).unwrap_or(0).max(0)
}

/// Becomes the same user inside a user namespace of its own, where it may create the PID and
/// mount namespaces of commands without being root.
pub(super) fn enter_user_namespace() -> std::io::Result<()> {
    let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER)?;
    std::fs::write("/proc/self/setgroups", "deny")?;
    std::fs::write("/proc/self/uid_map", format!("{uid} {uid} 1"))?;
    std::fs::write("/proc/self/gid_map", format!("{gid} {gid} 1"))?;
    Ok(())
}
