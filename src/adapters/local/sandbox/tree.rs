//! The file system a confined command sees: a root of its own, built once by the helper.
//!
//! The root (`ROOT`, in the helper's private `/run`) is made the `/` of a mount namespace of
//! its own at the helper's start (`template`); each command's init joins that namespace and
//! copies it (`setns`, then `unshare`), so a command's start copies only the root's mounts,
//! never the host's, and needs no `pivot_root`. The root holds only:
//! - the system folders, bound read-only, `nosuid` and `nodev` on every mount below them (so no
//!   mode, owner, time, xattr or link of a host file can change: the kernel answers `EROFS`);
//! - `/dev` with the harmless devices bound from the host, and per command a devpts instance
//!   of its own (only its own terminals, at most `PTYS` of them) and a bounded `/dev/shm`;
//! - per command: its project (bound `nosuid,nodev`; for a root server through an idmapped
//!   mount, see `identity`), a `/proc` of its PID namespace and a bounded private `/tmp`.
//!
//! Nothing else of the host exists there: not the server's database, not the other projects,
//! not `/var`, `/home` or `/root`. The root itself is read-only once entered.

use std::{
    ffi::CString,
    os::fd::{AsRawFd, OwnedFd},
    path::{Path, PathBuf},
};

use nix::{
    fcntl::{OFlag, open},
    mount::{MntFlags, MsFlags, mount, umount2},
    sys::stat::Mode,
};

use super::{
    confine::Grant,
    protocol::{HelperConfig, Network},
};

/// Where the helper builds the commands' root, inside its own private `/run`.
pub const ROOT: &str = "/run/rdev-sandbox/root";

/// What must stay reachable under `/run`: the resolver's files, which `/etc/resolv.conf` links
/// to on systemd hosts.
const RUN_KEPT: &str = "/run/systemd/resolve";

/// Device files bound from the host: none of them reaches anything outside the command.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Links every `/dev` has.
const DEV_LINKS: &[(&str, &str)] = &[
    ("ptmx", "pts/ptmx"),
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];

/// Terminals one command may open in its own devpts.
pub const PTYS: u32 = 64;

/// A step that failed, with what to tell the client.
pub struct SetupError {
    pub project_missing: bool,
    pub message: String,
}

pub fn setup_error(what: &str, error: impl std::fmt::Display) -> SetupError {
    SetupError { project_missing: false, message: format!("{what}: {error}") }
}

fn inside(path: &Path) -> PathBuf {
    Path::new(ROOT).join(path.strip_prefix("/").unwrap_or(path))
}

/// The helper's own mount namespace, and in it the commands' root, built once at its start. Its
/// mounts are private (nothing mounted for a command reaches the host), `/run` is covered with
/// an empty folder (no host daemon's socket), and `config.hidden` is covered inside the root.
pub fn build(config: &HelperConfig) -> Result<(), String> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(|e| format!("new mount namespace: {e}"))?;
    let message = |e: SetupError| e.message;
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(|e| format!("making mounts private: {e}"))?;
    let resolver = Grant::open(Path::new(RUN_KEPT)).ok();
    std::fs::create_dir_all("/run").map_err(|e| format!("creating /run: {e}"))?;
    tmpfs(Path::new("/run"), "mode=755", MsFlags::empty()).map_err(message)?;
    std::fs::create_dir_all(ROOT).map_err(|e| format!("creating {ROOT}: {e}"))?;
    tmpfs(Path::new(ROOT), "mode=755", MsFlags::empty()).map_err(message)?;

    for path in &config.read_only {
        bind_read_only(path, &inside(path)).map_err(message)?;
    }
    for (link, target) in &config.links {
        std::os::unix::fs::symlink(target, inside(link)).map_err(|e| format!("linking {}: {e}", link.display()))?;
    }
    if let Some(resolver) = &resolver {
        let target = inside(Path::new(RUN_KEPT));
        std::fs::create_dir_all(&target).map_err(|e| format!("creating {}: {e}", target.display()))?;
        bind_fd(&resolver.fd, &target, true).map_err(message)?;
    }
    build_dev().map_err(message)?;
    if config.network == Network::Public {
        point_resolver_at_pasta().map_err(message)?;
    }
    for folder in ["proc", "tmp"] {
        std::fs::create_dir_all(inside(Path::new(folder))).map_err(|e| format!("creating /{folder}: {e}"))?;
    }
    config.hidden.iter().try_for_each(|path| hide(&inside(path))).map_err(message)?;
    let projects = inside(&config.projects_root);
    std::fs::create_dir_all(&projects).map_err(|e| format!("creating {}: {e}", projects.display()))
}

/// Makes the folder a project is mounted on in the root (and the folders on the way).
pub fn make_place(project_dir: &Path) -> Result<(), String> {
    let target = inside(project_dir);
    std::fs::create_dir_all(&target).map_err(|e| format!("creating {}: {e}", target.display()))
}

/// With `public`, the root's `/etc/resolv.conf` names the address pasta forwards to the host's
/// resolver (the host's own resolver is on an address commands may not reach).
fn point_resolver_at_pasta() -> Result<(), SetupError> {
    let mut resolv = inside(Path::new("/etc/resolv.conf"));
    if let Ok(target) = std::fs::read_link(&resolv) {
        resolv = if target.is_absolute() { inside(&target) } else { inside(Path::new("/etc")).join(target) };
    }
    if !resolv.exists() {
        return Ok(());
    }
    let ours = Path::new(ROOT).with_file_name("resolv.conf");
    std::fs::write(&ours, format!("nameserver {}\n", super::network::DNS_ADDRESS))
        .map_err(|e| setup_error("writing resolv.conf", e))?;
    mount(Some(&ours), &resolv, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(|e| setup_error("binding resolv.conf", e))?;
    set_read_only(&resolv, true, false)
}

/// `/dev` of the root: a small tmpfs with the host's harmless devices bound in, read-only.
fn build_dev() -> Result<(), SetupError> {
    let dev = inside(Path::new("dev"));
    std::fs::create_dir_all(&dev).map_err(|e| setup_error("creating /dev", e))?;
    tmpfs(&dev, "mode=755,size=64k", MsFlags::MS_NOEXEC)?;
    for name in DEVICES {
        let host = Path::new("/dev").join(name);
        if !host.exists() {
            continue;
        }
        let target = dev.join(name);
        std::fs::File::create(&target).map_err(|e| setup_error(&format!("creating /dev/{name}"), e))?;
        mount(Some(&host), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(|e| setup_error(&format!("binding /dev/{name}"), e))?;
    }
    for (link, target) in DEV_LINKS {
        std::os::unix::fs::symlink(target, dev.join(link)).map_err(|e| setup_error(&format!("/dev/{link}"), e))?;
    }
    for folder in ["pts", "shm"] {
        std::fs::create_dir(dev.join(folder)).map_err(|e| setup_error(&format!("/dev/{folder}"), e))?;
    }
    set_read_only(&dev, false, true)
}

/// A mount namespace whose `/` is the root, read-only (folders for new projects are made in the
/// helper's view of it, the same file system), with the helper's `/proc` bound in it: a kernel
/// lets a user namespace mount `/proc` only where one is fully visible, and each command's own
/// covers it. Made by a child of the helper's and handed back.
pub fn template() -> Result<OwnedFd, String> {
    super::forked::handed_back(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(|e| format!("new mount namespace: {e}"))?;
        let proc = inside(Path::new("proc"));
        mount(Some("/proc"), &proc, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
            .map_err(|e| format!("binding /proc: {e}"))?;
        nix::unistd::chdir(ROOT).map_err(|e| format!("entering the root: {e}"))?;
        nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
        umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("leaving the host's file system: {e}"))?;
        nix::unistd::chdir("/").map_err(|e| format!("entering /: {e}"))?;
        // The root's own mount only: the system folders below are read-only already.
        set_read_only(Path::new("/"), false, false).map_err(|e| e.message)?;
        open("/proc/thread-self/ns/mnt", OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| format!("opening the mount namespace: {e}"))
    })
    .map_err(|e| format!("preparing the commands' root: {e}"))
}

/// The command's own mounts, in its copy of the template: opened for the Landlock rules.
pub struct Private {
    pub project: Grant,
    pub writable: Vec<Grant>,
    pub proc: Grant,
    pub terminals: Grant,
}

/// Joins the template (`template`), copies it, and mounts the command's own parts: called by
/// its init (PID 1) before the shell starts. `project` is the project's folder as a detached
/// mount (`open_tree`, made before: the template shows no host path), `tmp_options` the tmpfs
/// options of `/tmp` and `/dev/shm`.
pub fn enter(
    template: &OwnedFd,
    project: &OwnedFd,
    project_dir: &Path,
    tmp_options: &str,
) -> Result<Private, SetupError> {
    use nix::sched::CloneFlags;
    nix::sched::setns(template, CloneFlags::CLONE_NEWNS).map_err(|e| setup_error("entering the root", e))?;
    nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(|e| setup_error("copying the root", e))?;
    let quiet = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("proc"), "/proc", Some("proc"), quiet, None::<&str>).map_err(|e| setup_error("mounting /proc", e))?;
    let mut writable = Vec::new();
    for folder in ["/tmp", "/dev/shm"] {
        tmpfs(Path::new(folder), tmp_options, MsFlags::empty())?;
        writable.push(Grant::open(Path::new(folder)).map_err(|e| setup_error(folder, e))?);
    }
    let pts_options = format!("newinstance,ptmxmode=0666,mode=0620,max={PTYS}");
    let pts = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    mount(Some("devpts"), "/dev/pts", Some("devpts"), pts, Some(pts_options.as_str()))
        .map_err(|e| setup_error("mounting /dev/pts", e))?;
    // Under /tmp (tests keep projects there) the folders on the way are the command's own.
    std::fs::create_dir_all(project_dir).map_err(|e| setup_error(&format!("creating {}", project_dir.display()), e))?;
    move_mount(project, project_dir).map_err(|e| setup_error("mounting the project", e))?;
    Ok(Private {
        project: Grant::open(project_dir).map_err(|e| SetupError {
            project_missing: e.kind() == std::io::ErrorKind::NotFound,
            message: format!("opening the project folder: {e}"),
        })?,
        writable,
        proc: Grant::open(Path::new("/proc")).map_err(|e| setup_error("/proc", e))?,
        terminals: Grant::open(Path::new("/dev/pts")).map_err(|e| setup_error("/dev/pts", e))?,
    })
}

/// Opens `path` as a detached copy of its mount (no submounts), to be moved into a command's
/// root; the caller may idmap it first.
pub fn detached(path: &Path) -> std::io::Result<OwnedFd> {
    let path = CString::new(path.as_os_str().as_encoded_bytes())?;
    // SAFETY: a path and flags; the result is a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            (libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC) as libc::c_uint,
        )
    };
    owned(fd)
}

fn owned(fd: libc::c_long) -> std::io::Result<OwnedFd> {
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| std::io::Error::other("descriptor out of range"))?;
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

/// Sets attributes on a detached mount; `userns` is the idmapping's user namespace.
pub fn set_attributes(fd: &OwnedFd, set: u64, userns: Option<&OwnedFd>) -> std::io::Result<()> {
    let userns_fd = userns.map_or(0, |fd| fd.as_raw_fd() as u64);
    mount_setattr(fd, false, libc::mount_attr { attr_set: set, attr_clr: 0, propagation: 0, userns_fd })
}

fn mount_setattr(fd: &OwnedFd, recursive: bool, attr: libc::mount_attr) -> std::io::Result<()> {
    let flags = libc::AT_EMPTY_PATH | if recursive { libc::AT_RECURSIVE } else { 0 };
    // SAFETY: the struct outlives the call; its size is passed along.
    let result = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags as libc::c_uint,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if result < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}

fn move_mount(fd: &OwnedFd, target: &Path) -> std::io::Result<()> {
    let target = CString::new(target.as_os_str().as_encoded_bytes())?;
    // SAFETY: two paths and flags.
    let result = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH as libc::c_uint,
        )
    };
    if result < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}

fn tmpfs(path: &Path, options: &str, extra: MsFlags) -> Result<(), SetupError> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | extra;
    mount(Some("tmpfs"), path, Some("tmpfs"), flags, Some(options))
        .map_err(|e| setup_error(&format!("mounting a tmpfs on {}", path.display()), e))
}

/// Binds `source` at `target` (created: a folder, or an empty file for a file) read-only,
/// `nosuid` and `nodev`, with every mount below it.
fn bind_read_only(source: &Path, target: &Path) -> Result<(), SetupError> {
    let created = if source.is_dir() {
        std::fs::create_dir_all(target)
    } else {
        target.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| std::fs::File::create(target).map(drop))
    };
    created.map_err(|e| setup_error(&format!("creating {}", target.display()), e))?;
    mount(Some(source), target, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
        .map_err(|e| setup_error(&format!("binding {}", source.display()), e))?;
    set_read_only(target, true, true)
}

fn bind_fd(fd: &OwnedFd, target: &Path, read_only: bool) -> Result<(), SetupError> {
    let source = format!("/proc/self/fd/{}", fd.as_raw_fd());
    mount(Some(source.as_str()), target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(|e| setup_error(&format!("mounting {}", target.display()), e))?;
    if read_only { set_read_only(target, true, true) } else { Ok(()) }
}

/// Read-only (and `nosuid`, `nodev` when `quiet`) on the mount at `path`, and on every mount
/// below it when `recursive`.
fn set_read_only(path: &Path, quiet: bool, recursive: bool) -> Result<(), SetupError> {
    let mut set = libc::MOUNT_ATTR_RDONLY;
    if quiet {
        set |= libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
    }
    let failed = |e: std::io::Error| setup_error(&format!("making {} read-only", path.display()), e);
    let fd = open(path, OFlag::O_PATH | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW, Mode::empty())
        .map_err(|e| failed(e.into()))?;
    let attr = libc::mount_attr { attr_set: set, attr_clr: 0, propagation: 0, userns_fd: 0 };
    mount_setattr(&fd, recursive, attr).map_err(failed)
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
