//! The sandbox helper: the small, long-lived process that starts every command of the local
//! executor (`rdev-api __sandbox-helper`, started by the server with a cleared environment and
//! a Unix socket as its stdin).
//!
//! The server never forks: a fork of a large multi-threaded process per command would cost
//! more, and its child would hold a copy of the server's memory (secrets included) until
//! `exec`. The helper holds nothing secret: it was `exec`ed fresh, with only `PATH`, and learns
//! only what the commands need. It is single-threaded, so its children may do real work
//! between `clone` and `exec` (see `confine`).
//!
//! Per command (confined): `clone` into a new PID namespace gives the command's init, PID 1
//! there, with a cgroup of the pool and the project's network namespace to take. The init moves
//! itself into the cgroup, makes or joins its other namespaces, enters its own root, confines
//! itself (see `children::setup`), forks the shell, waits for it and exits with its status; the
//! kernel then kills whatever the shell left behind before the helper sees the init exit. So a command's answer comes when its shell exits, and nothing it started
//! outlives it. The helper dies with the server (`PR_SET_PDEATHSIG`, and end of file on the
//! socket), and each init dies with the helper, so not even `kill -9` of the server leaves a
//! command running.

use std::{
    collections::{HashMap, HashSet},
    ffi::CString,
    io::Write as _,
    os::{
        fd::{AsFd, AsRawFd, OwnedFd},
        unix::net::UnixStream,
    },
    path::{Component, PathBuf},
    process::ExitCode,
};

use anyhow::{Context as _, bail};
use nix::{
    errno::Errno,
    fcntl::OFlag,
    poll::{PollFd, PollFlags, PollTimeout, poll},
    sys::{
        prctl,
        signal::{SigSet, Signal, kill, killpg},
        signalfd::{SfdFlags, SignalFd},
        wait::{WaitPidFlag, WaitStatus, waitpid},
    },
    unistd::{ForkResult, Pid, fork},
};

use super::{
    cgroups::{self, Slot},
    channel::{control_socket, read_config, receive},
    children::{self, Context, Plan, Start},
    confine::{self, Grant},
    identity::Identity,
    network::Networks,
    protocol::{
        Capabilities, FailureKind, FrameReader, FromHelper, HelperConfig, MAX_FDS, Spawn, SpawnFailure, ToHelper,
        encode,
    },
    seccomp, tree,
};
use crate::domain::ProjectId;

/// Stack of a command's init between `clone` and its end: it runs the mount setup and Landlock.
const INIT_STACK_BYTES: usize = 1 << 20;

/// What confining commands takes, made once at the helper's start.
struct Confinement {
    identity: Identity,
    /// The commands' root as a mount namespace (see `tree::template`).
    template: OwnedFd,
    /// `None` with the host's network.
    networks: Option<Networks>,
    /// `None` without limits.
    cgroups: Option<cgroups::Pool>,
    /// The cgroup of each running command, by command id.
    slots: HashMap<u64, Slot>,
    tmp_options: String,
    /// Projects whose folder exists in the commands' root.
    rooted: HashSet<PathBuf>,
}

pub fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rdev-api sandbox helper: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let control = control_socket()?;
    // Dies with the server, even with `kill -9`; a server already gone means nobody to serve.
    prctl::set_pdeathsig(Signal::SIGKILL)?;
    if nix::unistd::getppid().as_raw() == 1 {
        bail!("the server that started this helper is gone");
    }
    prctl::set_child_subreaper(true)?;
    let mut frames = FrameReader::default();
    let config: HelperConfig = read_config(&control, &mut frames)?;
    let mut helper = Helper::new(config, control, frames)?;
    let capabilities = helper.capabilities();
    // Requests pass through this memory: no other process of this user may read it. (Not
    // before: entering the user namespace writes this process's own /proc files.)
    prctl::set_dumpable(false)?;
    match capabilities {
        Ok(capabilities) => helper.send(&FromHelper::Ready(capabilities))?,
        Err(reason) => return helper.send(&FromHelper::Unusable { reason }),
    }
    helper.serve()
}

struct Helper {
    config: HelperConfig,
    control: UnixStream,
    frames: FrameReader,
    read_only: Vec<Grant>,
    devices: Vec<Grant>,
    /// Children write why a command could not start here (`id \t kind \t message`), read
    /// before their exit is reported.
    report_read: OwnedFd,
    report_write: OwnedFd,
    failures: HashMap<u64, SpawnFailure>,
    /// Started commands: the helper's child (the init, or the shell unconfined) → command id.
    running: HashMap<i32, u64>,
    pids: HashMap<u64, i32>,
    user_namespace: bool,
    /// Set up by `capabilities` when commands are confined.
    confined: Option<Confinement>,
    /// Stacks of each command's init and of its shell before `exec`, allocated once: a child
    /// gets a copy of them, touching only the pages it uses.
    stack: Vec<u8>,
    shell_stack: Vec<u8>,
}

impl Helper {
    fn new(config: HelperConfig, control: UnixStream, frames: FrameReader) -> anyhow::Result<Self> {
        let (report_read, report_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        nix::fcntl::fcntl(&report_read, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        let open_all = |paths: &[PathBuf]| paths.iter().filter_map(|p| Grant::open(p).ok()).collect::<Vec<_>>();
        Ok(Self {
            read_only: open_all(&config.read_only),
            devices: open_all(&config.devices),
            config,
            control,
            frames,
            report_read,
            report_write,
            failures: HashMap::new(),
            running: HashMap::new(),
            pids: HashMap::new(),
            user_namespace: false,
            confined: None,
            stack: vec![0u8; INIT_STACK_BYTES],
            shell_stack: vec![0u8; children::SHELL_STACK_BYTES],
        })
    }

    /// Sets up and tries out the confinement; `Err` says what this system lacks.
    fn capabilities(&mut self) -> Result<Capabilities, String> {
        let landlock_abi = confine::landlock_abi();
        if !self.config.confine {
            return Ok(Capabilities { landlock_abi, user_namespace: false, confined: false, limits: None });
        }
        if landlock_abi < 1 {
            return Err("Landlock is not available: it needs Linux 5.13 or later with landlock in the kernel's \
                        lsm= list"
                .into());
        }
        let root = nix::unistd::geteuid().is_root();
        // Before the user namespace: a cgroup of this user's is writable only from outside it.
        let cgroups = match &self.config.limits {
            Some(limits) => Some(cgroups::Pool::open(limits).map_err(|e| {
                format!("per-command limits need a writable cgroup: {e} (RDEV_SANDBOX_LIMITS=off runs without them)")
            })?),
            None => None,
        };
        if !root {
            confine::enter_user_namespace().map_err(|e| {
                format!(
                    "cannot create a user namespace ({e}); unprivileged user namespaces may be disabled \
                     (sysctl user.max_user_namespaces, kernel.unprivileged_userns_clone, or an AppArmor policy)"
                )
            })?;
            self.user_namespace = true;
        }
        tree::build(&self.config)?;
        let identity = Identity::new(root, self.config.uid, &mut self.stack)?;
        let bytes = self.config.tmp_bytes;
        let inodes = (bytes / 4096).max(1024);
        let limits = cgroups.as_ref().map(|pool| pool.describe().to_owned());
        // The filters are the helper's own, and so every child's from its birth: compiled and
        // attached once, not per command. (Nothing the helper or pasta does is refused by them.)
        seccomp::install(&seccomp::filters()?)?;
        self.confined = Some(Confinement {
            identity,
            template: tree::template()?,
            networks: Networks::new(self.config.network, self.user_namespace)?,
            cgroups,
            slots: HashMap::new(),
            tmp_options: format!("mode=1777,size={bytes},nr_inodes={inodes}"),
            rooted: HashSet::new(),
        });
        self.probe()?;
        Ok(Capabilities { landlock_abi, user_namespace: self.user_namespace, confined: true, limits })
    }

    /// Sets up one command the real way (on the projects folder, without a shell) and waits for
    /// it: what fails here would fail every command.
    fn probe(&mut self) -> Result<(), String> {
        let root = self.config.projects_root.clone();
        let plan = Plan {
            id: 0,
            project_dir: root.clone(),
            workdir: None,
            argv: Vec::new(),
            env: Vec::new(),
            fds: Vec::new(),
            has_stdin: false,
            tty: false,
        };
        let report = self.report_write.as_raw_fd();
        let (stack, pid) = {
            let mut stack = std::mem::take(&mut self.stack);
            let result =
                self.clone_init(&plan, &mut stack, |context, start| match children::setup(context, &root, start) {
                    Ok(()) => 0,
                    Err((kind, why)) => {
                        children::write_report(report, 0, kind, &why);
                        1
                    }
                });
            (stack, result)
        };
        self.stack = stack;
        let pid = pid.map_err(|failure| format!("cannot start a confined command: {}", failure.message))?;
        let status = waitpid(Pid::from_raw(pid), None);
        if let Some(slot) = self.confined.as_mut().and_then(|c| c.slots.remove(&0)) {
            self.confined.as_mut().and_then(|c| c.cgroups.as_mut()).map(|pool| pool.give_back(slot));
        }
        match status {
            Ok(WaitStatus::Exited(_, 0)) => Ok(()),
            _ => {
                self.read_reports();
                let why = self.failures.remove(&0).map(|f| f.message).unwrap_or_else(|| "it failed".into());
                Err(format!("cannot set up a confined command: {why}"))
            }
        }
    }

    /// What a command's init needs of the helper (its copy of the helper's memory holds the rest).
    fn children<'a>(&'a self, confinement: &'a Confinement) -> Context<'a> {
        Context {
            helper_only: [self.control.as_raw_fd(), self.report_read.as_raw_fd()],
            report: self.report_write.as_raw_fd(),
            read_only: &self.read_only,
            devices: &self.devices,
            identity: &confinement.identity,
            template: &confinement.template,
            tmp_options: &confinement.tmp_options,
        }
    }

    /// Clones a confined command's init running `body` in the project's network, with the
    /// cgroup it moves itself into. Returns its pid.
    fn clone_init(
        &mut self,
        plan: &Plan,
        stack: &mut [u8],
        body: impl FnMut(&Context<'_>, &Start) -> isize,
    ) -> Result<i32, SpawnFailure> {
        let internal = |message: String| SpawnFailure { kind: FailureKind::Internal, message };
        let Some(confinement) = self.confined.as_mut() else { return Err(internal("not confined".into())) };
        if confinement.rooted.insert(plan.project_dir.clone()) {
            tree::make_place(&plan.project_dir).map_err(internal)?;
        }
        let network = match confinement.networks.as_mut() {
            Some(networks) => {
                let project = plan.project_dir.file_name().map(|n| n.to_string_lossy().into_owned());
                Some(networks.of(&project.unwrap_or_default()).map_err(internal)?.as_raw_fd())
            }
            None => None,
        };
        let slot = match confinement.cgroups.as_mut() {
            Some(pool) => Some(pool.take().map_err(internal)?),
            None => None,
        };
        let confinement = self.confined.as_ref().ok_or_else(|| internal("not confined".into()))?;
        let context = self.children(confinement);
        let start = Start { cgroup: slot.as_ref(), network };
        let mut body = body;
        let init = Box::new(|| body(&context, &start));
        // SAFETY: single-threaded; the child runs on its own copy of `stack`.
        let cloned = unsafe { nix::sched::clone(init, stack, children::namespaces(), Some(libc::SIGCHLD)) };
        let confinement = self.confined.as_mut().ok_or_else(|| internal("not confined".into()))?;
        match (cloned, slot) {
            (Ok(pid), slot) => {
                if let Some(slot) = slot {
                    confinement.slots.insert(plan.id, slot);
                }
                Ok(pid.as_raw())
            }
            (Err(error), slot) => {
                if let (Some(slot), Some(pool)) = (slot, confinement.cgroups.as_mut()) {
                    pool.give_back(slot);
                }
                Err(internal(format!("cannot start: {error}")))
            }
        }
    }

    fn send(&self, message: &FromHelper) -> anyhow::Result<()> {
        (&self.control).write_all(&encode(message)).context("writing to the server")
    }

    fn serve(&mut self) -> anyhow::Result<()> {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        mask.thread_block()?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let (control_ready, child_exited) = {
                let mut fds = [
                    PollFd::new(self.control.as_fd(), PollFlags::POLLIN),
                    PollFd::new(signals.as_fd(), PollFlags::POLLIN),
                ];
                match poll(&mut fds, PollTimeout::NONE) {
                    Err(Errno::EINTR) => continue,
                    result => result?,
                };
                let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
                (ready(&fds[0]), ready(&fds[1]))
            };
            if child_exited {
                while let Ok(Some(_)) = signals.read_signal() {}
                self.reap()?;
            }
            if control_ready {
                let (n, fds) = receive(self.control.as_raw_fd(), &mut buf)?;
                if n == 0 {
                    // The server is gone: so is everything it started.
                    self.kill_all();
                    return Ok(());
                }
                self.frames.push(&buf[..n], fds);
                while let Some(request) = self.frames.next::<ToHelper>()? {
                    self.handle(request)?;
                }
            }
        }
    }

    fn handle(&mut self, request: ToHelper) -> anyhow::Result<()> {
        match request {
            ToHelper::Spawn(spawn) => {
                let fds = self.frames.take_fds(spawn.fds);
                let id = spawn.id;
                match self.plan(spawn, fds).and_then(|plan| self.start(plan)) {
                    Ok(pid) => {
                        self.running.insert(pid, id);
                        self.pids.insert(id, pid);
                    }
                    Err(failure) => {
                        self.send(&FromHelper::Exited { id, exit_code: -1, failure: Some(failure), limit: None })?
                    }
                }
            }
            ToHelper::Kill { id } => {
                if let Some(pid) = self.pids.get(&id) {
                    self.kill(*pid);
                }
            }
        }
        Ok(())
    }

    fn plan(&self, spawn: Spawn, fds: Vec<OwnedFd>) -> Result<Plan, SpawnFailure> {
        let invalid = |message: &str| SpawnFailure { kind: FailureKind::Internal, message: message.into() };
        let expected = if spawn.tty { 1..=1 } else { 2..=MAX_FDS };
        if fds.len() != spawn.fds || !expected.contains(&fds.len()) {
            return Err(invalid("the request did not carry its descriptors"));
        }
        if !ProjectId::is_valid(&spawn.project) {
            return Err(invalid("not a project name"));
        }
        let workdir = spawn.workdir.map(PathBuf::from);
        if workdir.as_deref().is_some_and(|w| w.components().any(|c| !matches!(c, Component::Normal(_)))) {
            return Err(invalid("the working folder must be relative and plain"));
        }
        let cstrings = |items: Vec<String>| items.into_iter().map(CString::new).collect::<Result<Vec<_>, _>>();
        let env = spawn.env.into_iter().map(|(name, value)| format!("{name}={value}")).collect();
        Ok(Plan {
            id: spawn.id,
            project_dir: self.config.projects_root.join(&spawn.project),
            workdir,
            argv: cstrings(spawn.argv).map_err(|_| invalid("NUL in the command line"))?,
            env: cstrings(env).map_err(|_| invalid("NUL in the environment"))?,
            fds,
            has_stdin: spawn.has_stdin,
            tty: spawn.tty,
        })
    }

    /// Starts the command's first process; its descriptors are closed here once it has them.
    fn start(&mut self, plan: Plan) -> Result<i32, SpawnFailure> {
        let failed = |e: Errno| SpawnFailure { kind: FailureKind::Internal, message: format!("cannot start: {e}") };
        let pid = if self.config.confine {
            let (mut stack, mut shell_stack) = (std::mem::take(&mut self.stack), std::mem::take(&mut self.shell_stack));
            let started = self.clone_init(&plan, &mut stack, |context, start| {
                children::init(context, &plan, start, &mut shell_stack)
            });
            (self.stack, self.shell_stack) = (stack, shell_stack);
            return started;
        } else {
            // SAFETY: single-threaded process.
            match unsafe { fork() }.map_err(failed)? {
                ForkResult::Child => {
                    children::reset_signals();
                    let (kind, why) = match children::shell_fds(&plan) {
                        Ok(fds) => children::shell(&plan, &fds),
                        Err(why) => (FailureKind::Internal, why),
                    };
                    children::write_report(self.report_write.as_raw_fd(), plan.id, kind, &why);
                    // SAFETY: ends the child without running the helper's destructors.
                    unsafe { libc::_exit(127) }
                }
                ForkResult::Parent { child } => child,
            }
        };
        Ok(pid.as_raw())
    }

    fn kill(&self, pid: i32) {
        let pid = Pid::from_raw(pid);
        if self.config.confine {
            // The init's end takes the whole namespace with it.
            let _ = kill(pid, Signal::SIGKILL);
        } else {
            let _ = killpg(pid, Signal::SIGKILL);
        }
    }

    fn kill_all(&self) {
        self.running.keys().for_each(|pid| self.kill(*pid));
    }

    fn reap(&mut self) -> anyhow::Result<()> {
        self.read_reports();
        loop {
            let (pid, exit_code) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, code),
                Ok(WaitStatus::Signaled(pid, signal, _)) => (pid, 128 + signal as i32),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return Ok(()),
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(error) => return Err(error.into()),
            };
            // Unconfined, orphans of the shell come here too (subreaper): nothing to report.
            let Some(id) = self.running.remove(&pid.as_raw()) else { continue };
            self.pids.remove(&id);
            if !self.config.confine {
                let _ = killpg(pid, Signal::SIGKILL);
            }
            let failure = self.failures.remove(&id);
            let limit = self.confined.as_mut().and_then(|confinement| {
                let slot = confinement.slots.remove(&id)?;
                confinement.cgroups.as_mut()?.give_back(slot)
            });
            self.send(&FromHelper::Exited { id, exit_code, failure, limit })?;
        }
    }

    fn read_reports(&mut self) {
        let mut text = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n) = nix::unistd::read(&self.report_read, &mut chunk) {
            if n == 0 {
                break;
            }
            text.extend_from_slice(&chunk[..n]);
        }
        for line in String::from_utf8_lossy(&text).lines() {
            let mut parts = line.splitn(3, '\t');
            let (Some(id), Some(kind), Some(message)) = (parts.next(), parts.next(), parts.next()) else { continue };
            let Ok(id) = id.parse() else { continue };
            let kind = match kind {
                "project_missing" => FailureKind::ProjectMissing,
                "workdir_missing" => FailureKind::WorkdirMissing,
                _ => FailureKind::Internal,
            };
            self.failures.insert(id, SpawnFailure { kind, message: message.to_owned() });
        }
    }
}
