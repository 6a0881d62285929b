//! The network of confined commands: a network namespace per project, made for the helper the
//! first time the project runs a command and kept. Commands of one project share it, as they
//! share the project's files. Each command's init enters it (the helper stays in the host's
//! network, where the NAT below must run).
//!
//! - `none`: the namespace has its own loopback, up, and nothing else: a command's tests can
//!   serve and call `127.0.0.1`, and no address of the host is reachable.
//! - `public`: the same, plus a user-space NAT to the outside (`pasta`, from Debian's `passt`)
//!   attached to the namespace, with no port forwarded either way and the gateway not mapped
//!   to the host's loopback; routing rules in the namespace make every non-public block
//!   (`domain::address`) and every address of the host unreachable, so only public addresses
//!   answer. DNS goes to `DNS_ADDRESS`, which pasta hands to the host's resolver.

use std::{
    collections::HashMap,
    ffi::CString,
    io::Write as _,
    net::IpAddr,
    os::fd::{AsRawFd, OwnedFd},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use ipnet::IpNet;
use nix::{
    fcntl::{OFlag, open},
    sched::{CloneFlags, setns, unshare},
    sys::stat::Mode,
    unistd::{ForkResult, fork},
};

use super::{forked, protocol::Network};

/// The address commands send DNS queries to with `public` (in `/etc/resolv.conf`): pasta maps
/// it to the host's resolver. Link-local, so nothing else answers there.
pub const DNS_ADDRESS: &str = "169.254.53.53";
/// The namespace's interface that pasta makes.
const INTERFACE: &str = "rdev0";
/// Where namespaces are bound for pasta, in the helper's private `/run`.
const NAMESPACES: &str = "/run/rdev-sandbox/namespaces";
/// How long pasta may take to bring the namespace's interface and default route up.
const PASTA_READY: Duration = Duration::from_secs(5);

pub struct Networks {
    by_project: HashMap<String, OwnedFd>,
    public: Option<Public>,
}

/// What `public` needs, found once at the helper's start.
struct Public {
    pasta: PathBuf,
    ip: PathBuf,
    /// Made unreachable in each namespace.
    blocked: Vec<IpNet>,
    /// The helper's own user namespace, for an unprivileged helper (pasta joins it).
    userns: Option<PathBuf>,
}

impl Networks {
    /// `None` for the host's network. `Err` names what `public` lacks on this host.
    pub fn new(network: Network, in_user_namespace: bool) -> Result<Option<Self>, String> {
        let public = match network {
            Network::Host => return Ok(None),
            Network::None => None,
            Network::Public => Some(Public::find(in_user_namespace)?),
        };
        Ok(Some(Self { by_project: HashMap::new(), public }))
    }

    /// `project`'s network namespace, made on first use.
    pub fn of(&mut self, project: &str) -> Result<&OwnedFd, String> {
        if !self.by_project.contains_key(project) {
            let namespace = make()?;
            if let Some(public) = &self.public {
                public.connect(&namespace, project)?;
            }
            self.by_project.insert(project.to_owned(), namespace);
        }
        self.by_project.get(project).ok_or_else(|| "the project's network is gone".into())
    }
}

/// A new network namespace with its loopback up, made by a child of the helper's (which stays
/// where it is) and handed back over a socket.
pub fn make() -> Result<OwnedFd, String> {
    forked::handed_back(|| {
        unshare(CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string())?;
        loopback_up()?;
        open("/proc/thread-self/ns/net", OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).map_err(|e| e.to_string())
    })
    .map_err(|e| format!("creating a network namespace: {e}"))
}

impl Public {
    fn find(in_user_namespace: bool) -> Result<Self, String> {
        let pasta = which("pasta")
            .ok_or("RDEV_SANDBOX_NETWORK=public needs pasta, from the passt package (Debian: apt-get install passt)")?;
        let ip = which("ip").ok_or(
            "RDEV_SANDBOX_NETWORK=public needs ip, from the iproute2 package (Debian: apt-get install iproute2)",
        )?;
        let mut blocked = crate::domain::address::non_public_blocks();
        // The host's own addresses: pasta would connect to them from the host, reaching its
        // services. (The one pasta copies into the namespace stays the namespace's own.)
        let own = nix::ifaddrs::getifaddrs().map_err(|e| format!("listing the host's addresses: {e}"))?;
        for address in own {
            let ip: Option<IpAddr> = address.address.and_then(|a| {
                a.as_sockaddr_in()
                    .map(|v4| IpAddr::V4(v4.ip()))
                    .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
            });
            if let Some(ip) = ip
                && !blocked.iter().any(|net| net.contains(&ip))
            {
                blocked.push(IpNet::from(ip));
            }
        }
        let userns = match in_user_namespace {
            true => Some(bind_namespace("/proc/thread-self/ns/user", "user")?),
            false => None,
        };
        Ok(Self { pasta, ip, blocked, userns })
    }

    /// Attaches pasta to `namespace` (the helper is in it), waits until its interface routes,
    /// then makes every blocked address unreachable.
    fn connect(&self, namespace: &OwnedFd, project: &str) -> Result<(), String> {
        let netns = bind_namespace(&format!("/proc/self/fd/{}", namespace.as_raw_fd()), &format!("net-{project}"))?;
        let netns = netns.to_string_lossy();
        let mut args = vec![
            "-f",
            "-q",
            "--config-net",
            "--no-map-gw",
            "-I",
            INTERFACE,
            "--dns-forward",
            DNS_ADDRESS,
            "-t",
            "none",
            "-u",
            "none",
            "-T",
            "none",
            "-U",
            "none",
            "--netns",
            &netns,
        ];
        let userns = self.userns.as_ref().map(|path| path.to_string_lossy());
        match &userns {
            Some(userns) => args.extend(["--userns", userns]),
            // As root pasta would drop to `nobody` before it joins the namespace, which only the
            // host's root may join; it confines itself (seccomp, namespaces of its own) instead.
            None => args.extend(["--runas", "0:0"]),
        }
        run_child(&self.pasta, &args, None, None)?;
        forked::in_child(Some(namespace), || {
            let deadline = Instant::now() + PASTA_READY;
            while !has_default_route() {
                if Instant::now() > deadline {
                    return Err(format!("pasta did not connect a project's network within {PASTA_READY:?}"));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(())
        })?;
        // Rules, not routes: they judge the destination only (the gateway itself may sit in a
        // blocked block), and come after the local table (the namespace's own addresses).
        let mut v4 =
            format!("rule add pref 50 to {DNS_ADDRESS}/32 lookup main\nroute add {DNS_ADDRESS}/32 dev {INTERFACE}\n");
        let mut v6 = String::new();
        for net in &self.blocked {
            let batch = if matches!(net, IpNet::V6(_)) { &mut v6 } else { &mut v4 };
            batch.push_str(&format!("rule add pref 100 to {net} unreachable\n"));
        }
        run_child(&self.ip, &["-4", "-batch", "-"], Some(v4.as_bytes()), Some(namespace))?;
        run_child(&self.ip, &["-6", "-batch", "-"], Some(v6.as_bytes()), Some(namespace))
    }
}

/// A namespace (`source`, a `/proc` path) bound onto a file in the helper's private `/run`,
/// where the programs it starts can name it (its `/proc/PID` is not theirs to read).
fn bind_namespace(source: &str, name: &str) -> Result<PathBuf, String> {
    let target = Path::new(NAMESPACES).join(name);
    std::fs::create_dir_all(NAMESPACES).map_err(|e| format!("creating {NAMESPACES}: {e}"))?;
    std::fs::File::create(&target).map_err(|e| format!("creating {}: {e}", target.display()))?;
    nix::mount::mount(Some(source), &target, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>)
        .map_err(|e| format!("binding a namespace to {}: {e}", target.display()))?;
    Ok(target)
}

/// The first `name` on the helper's `PATH`, or in the system's `sbin` folders.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).is_ok()
}

/// Whether the current network namespace has an IPv4 default route (`/proc/net` is the
/// namespace's own).
fn has_default_route() -> bool {
    std::fs::read_to_string("/proc/thread-self/net/route")
        .is_ok_and(|table| table.lines().skip(1).any(|line| line.split('\t').nth(1) == Some("00000000")))
}

/// Starts `program` with `args`: it dies with the helper, sees no descriptor of the helper's,
/// and reads `input` (or nothing). With a `namespace` it runs in that network and is waited
/// for; without, it runs in the host's network and goes on (pasta).
fn run_child(program: &Path, args: &[&str], input: Option<&[u8]>, namespace: Option<&OwnedFd>) -> Result<(), String> {
    let name = program.display().to_string();
    let failed = |e: &dyn std::fmt::Display| format!("running {name}: {e}");
    let argv: Vec<CString> = std::iter::once(program.as_os_str().as_encoded_bytes())
        .chain(args.iter().map(|a| a.as_bytes()))
        .map(|a| CString::new(a).map_err(|e| failed(&e)))
        .collect::<Result<_, _>>()?;
    let (stdin_read, stdin_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| failed(&e))?;
    // SAFETY: the helper is single-threaded; the child only resets itself and execs.
    match unsafe { fork() }.map_err(|e| failed(&e))? {
        ForkResult::Child => {
            super::children::reset_signals();
            let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
            if let Some(namespace) = namespace
                && setns(namespace, CloneFlags::CLONE_NEWNET).is_err()
            {
                // SAFETY: ends the child without running the helper's destructors.
                unsafe { libc::_exit(126) }
            }
            // SAFETY: descriptor juggling in the child before exec.
            unsafe {
                libc::dup2(stdin_read.as_raw_fd(), 0);
                libc::syscall(libc::SYS_close_range, 3, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC);
            }
            let _ = nix::unistd::execv(&argv[0], &argv);
            // SAFETY: ends the child without running the helper's destructors.
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { child } => {
            drop(stdin_read);
            let mut writer = std::fs::File::from(stdin_write);
            if let Some(input) = input {
                writer.write_all(input).map_err(|e| failed(&e))?;
            }
            drop(writer);
            if namespace.is_none() {
                return Ok(());
            }
            match nix::sys::wait::waitpid(child, None) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => Ok(()),
                other => Err(failed(&format!("it ended with {other:?}"))),
            }
        }
    }
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
