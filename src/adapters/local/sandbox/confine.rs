//! What a confined command's processes do to themselves between the helper's `clone` and the
//! `exec` of the shell. Runs in forked children of the single-threaded helper, so it may
//! allocate; it must never return into the helper's loop (callers `_exit`).
//!
//! The layers, each closing what the others leave open:
//! - a PID namespace: the shell's init is PID 1, so when it ends the kernel kills every process
//!   left in it, whatever they did with sessions, process groups or double forks;
//! - a mount namespace: a `/proc` of that PID namespace only (no other process, the server's
//!   included, can even be named), private, empty `/tmp` and `/dev/shm`, and (from the
//!   helper's own namespace, which each command's copies) an empty `/run`, so no host daemon's
//!   socket;
//! - Landlock: reads and executes only in system folders, writes only in the project and the
//!   private folders, no signals or abstract sockets out of the sandbox, no ptrace of anything
//!   outside it (which is what guards `/proc/PID/environ` and `/proc/PID/mem`);
//! - no capabilities, and `no_new_privs`: a command of a root server is uid 0 without any
//!   privilege, and no setuid binary gives one back.

use std::{
    ffi::CString,
    os::fd::{AsFd as _, AsRawFd, BorrowedFd, OwnedFd},
    path::{Path, PathBuf},
};

use landlock::{
    ABI, Access, AccessFs, BitFlags, CompatLevel, Compatible, PathBeneath, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, Scope,
};
use nix::{
    fcntl::{OFlag, open},
    mount::{MsFlags, mount},
    sys::stat::Mode,
};

/// The Landlock ABI whose rights are asked for; a kernel with fewer grants fewer (best effort),
/// which the helper reports at start.
const LANDLOCK_ABI: ABI = ABI::V9;

/// Private folders each command gets, empty at its start and gone at its end, with their mode.
const PRIVATE_FOLDERS: &[(&str, &str)] = &[("/tmp", "mode=1777"), ("/dev/shm", "mode=1777")];

/// What must stay reachable under the private `/run`: the resolver's files, which
/// `/etc/resolv.conf` links to on systemd hosts.
const RUN_KEPT: &str = "/run/systemd/resolve";

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

/// The namespace's own folders, opened after they were mounted: Landlock rules name inodes, and
/// these are not the host's.
pub struct Private {
    pub project: Grant,
    pub writable: Vec<Grant>,
    pub proc: Option<Grant>,
}

/// A step that failed, with what to tell the client.
pub struct SetupError {
    pub project_missing: bool,
    pub message: String,
}

fn setup_error(what: &str, error: impl std::fmt::Display) -> SetupError {
    SetupError { project_missing: false, message: format!("{what}: {error}") }
}

/// The helper's own mount namespace, built once at its start; each command's is a copy of it.
/// Its mounts are private (nothing mounted for a command reaches the host), `/run` is an
/// empty folder (no host daemon's socket; the resolver's files stay), and `hidden` is covered.
pub fn prepare_helper_mounts(hidden: &[PathBuf]) -> Result<(), String> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(|e| format!("new mount namespace: {e}"))?;
    let private = MsFlags::MS_REC | MsFlags::MS_PRIVATE;
    let message = |e: SetupError| e.message;
    mount(None::<&str>, "/", None::<&str>, private, None::<&str>).map_err(|e| format!("making mounts private: {e}"))?;
    let resolver = Grant::open(Path::new(RUN_KEPT)).ok();
    if Path::new("/run").is_dir() {
        mount(Some("tmpfs"), "/run", Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=755"))
            .map_err(|e| format!("covering /run: {e}"))?;
    }
    if let Some(resolver) = &resolver {
        bind_back(&resolver.fd, Path::new(RUN_KEPT)).map_err(message)?;
    }
    hidden.iter().try_for_each(|path| hide(path)).map_err(message)
}

/// Builds the command's view of the file system, in its new mount namespace (a copy of the
/// helper's): called by its init (PID 1) before the shell starts.
pub fn prepare_mounts(project_dir: &Path) -> Result<Private, SetupError> {
    let quiet = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("proc"), "/proc", Some("proc"), quiet, None::<&str>).map_err(|e| setup_error("mounting /proc", e))?;
    // Open what the private folders will cover before covering it.
    let project = Grant::open(project_dir).map_err(|e| SetupError {
        project_missing: e.kind() == std::io::ErrorKind::NotFound,
        message: format!("opening the project folder: {e}"),
    })?;
    let mut writable = Vec::new();
    for (folder, options) in PRIVATE_FOLDERS {
        if !Path::new(folder).is_dir() {
            continue;
        }
        mount(Some("tmpfs"), *folder, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some(*options))
            .map_err(|e| setup_error(&format!("mounting a private {folder}"), e))?;
        writable.push(Grant::open(Path::new(folder)).map_err(|e| setup_error(folder, e))?);
    }
    // A project inside a folder that was just covered (tests keep projects under /tmp) is put
    // back at its own path, alone.
    if PRIVATE_FOLDERS.iter().any(|(folder, _)| project_dir.starts_with(folder)) {
        bind_back(&project.fd, project_dir)?;
    }
    let proc = Grant::open(Path::new("/proc")).ok();
    Ok(Private { project, writable, proc })
}

/// Mounts what `fd` refers to at `target` (created, with its parents, in a private folder).
fn bind_back(fd: &OwnedFd, target: &Path) -> Result<(), SetupError> {
    std::fs::create_dir_all(target).map_err(|e| setup_error(&format!("creating {}", target.display()), e))?;
    let source = format!("/proc/self/fd/{}", fd.as_raw_fd());
    mount(Some(source.as_str()), target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(|e| setup_error(&format!("mounting {}", target.display()), e))
}

/// Covers a folder with an empty read-only one, a file with `/dev/null`.
fn hide(path: &Path) -> Result<(), SetupError> {
    let Ok(metadata) = std::fs::symlink_metadata(path) else { return Ok(()) };
    let result = if metadata.is_dir() {
        let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        mount(Some("tmpfs"), path, Some("tmpfs"), flags, Some("mode=000,size=4k"))
    } else {
        mount(Some("/dev/null"), path, None::<&str>, MsFlags::MS_BIND, None::<&str>)
    };
    result.map_err(|e| setup_error(&format!("hiding {}", path.display()), e))
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
        .chain(private.proc.iter().map(|g| rule(g, read)))
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

/// Empties the bounding set, which only `exec` consults: the helper does it once at its start,
/// and every command inherits it.
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
