//! A command owns nothing on the host: tried as an attacker would, it changes no host file,
//! makes no file that gives a privilege, reads no root-only file, reaches no host terminal,
//! network, IPC object or keyring, and takes no more than its limits. With the server as root
//! and as an unprivileged user (given a delegated cgroup, as an operator would).

use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::PathBuf,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    isolation::{Home, NOBODY, Target, start_with},
    support::Db,
};

/// The two ways the server runs.
#[derive(Clone, Copy, Debug)]
enum As {
    Root,
    Nobody,
}

async fn server(who: As, envs: &[(&str, &str)]) -> Target {
    let uid = match who {
        As::Root => None,
        As::Nobody => Some(NOBODY),
    };
    start_with(Db::Sqlite, uid, Home::VarTmp, envs).await
}

fn out(reply: &Value) -> String {
    format!("{}{}", reply["stdout"].as_str().unwrap_or_default(), reply["stderr"].as_str().unwrap_or_default())
}

/// Host files a command may see (read-only), made fresh for one test and removed after it: the
/// attacks aim at these only, so a sandbox that regressed breaks no file of the machine's.
struct Victims {
    dir: PathBuf,
}

const ROOT_ONLY_SECRET: &str = "root-only-secret-51c0";

impl Victims {
    /// Under /usr/local/share, which commands see read-only: a file, a root-only secret and a
    /// 0700 folder, all root's.
    fn new() -> Self {
        let dir = PathBuf::from(format!("/usr/local/share/rdev-sandbox-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("private")).unwrap();
        std::fs::set_permissions(dir.join("private"), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(dir.join("file"), "host file").unwrap();
        std::fs::set_permissions(dir.join("file"), std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(dir.join("secret"), ROOT_ONLY_SECRET).unwrap();
        std::fs::set_permissions(dir.join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
        Self { dir }
    }

    /// Mode, owner, times (ctime moves with any change of metadata, xattrs and links included).
    fn state(&self) -> Vec<(u32, u32, i64, i64, i64, u64)> {
        ["", "file", "secret", "private"]
            .iter()
            .map(|name| {
                let m = std::fs::symlink_metadata(self.dir.join(name)).unwrap();
                (m.mode(), m.uid(), m.mtime(), m.ctime(), m.ctime_nsec(), m.nlink())
            })
            .collect()
    }
}

impl Drop for Victims {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn host_files_outside_the_project_do_not_change(who: As) {
    let target = server(who, &[]).await;
    let victims = Victims::new();
    let before = victims.state();
    let v = victims.dir.display();
    let reply = target
        .run(&format!(
            "chmod 4777 {v}/file; chmod 0777 {v}/private {v}; chown 0:0 {v}/file; touch -d 2001-01-01 {v}/file {v}; \
             python3 -c 'import os; os.setxattr(\"{v}/file\", \"user.owned\", b\"1\")'; ln {v}/file hard; \
             cat {v}/secret /etc/shadow; \
             echo end"
        ))
        .await;
    let output = out(&reply);
    assert!(output.contains("end"), "{output}");
    assert!(!output.contains(ROOT_ONLY_SECRET) && !output.contains("root:"), "a root-only file was read: {output}");
    assert_eq!(victims.state(), before, "a host file changed: {output}");
    assert!(!target.dir.path().join("projects/hello/hard").exists(), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_files_do_not_change_under_a_root_server() {
    host_files_outside_the_project_do_not_change(As::Root).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_files_do_not_change_under_an_unprivileged_server() {
    host_files_outside_the_project_do_not_change(As::Nobody).await;
}

/// Files a command makes carry no setuid or setgid bit, however it asks for one.
async fn files_it_makes_give_no_privilege(who: As) {
    let target = server(who, &[]).await;
    let reply = target
        .run(
            "cp /bin/true t; chmod 4755 t; chmod g+s t; chmod 6755 t; install -m 4755 /bin/true u; \
             python3 -c 'import os; os.close(os.open(\"v\", os.O_CREAT | os.O_WRONLY, 0o6755))'; \
             python3 -c 'import os; os.mknod(\"w\", 0o104755)'; mkdir -m 2775 d; ls -ln; echo end",
        )
        .await;
    let output = out(&reply);
    assert!(output.contains("end"), "{output}");
    let project = target.dir.path().join("projects/hello");
    for entry in std::fs::read_dir(&project).unwrap() {
        let entry = entry.unwrap();
        let mode = entry.metadata().unwrap().mode();
        assert_eq!(mode & 0o6000, 0, "{:?} has mode {mode:o}: {output}", entry.file_name());
    }
    assert!(project.join("t").exists(), "the plain copy is there: {output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_a_command_makes_give_no_privilege_under_a_root_server() {
    files_it_makes_give_no_privilege(As::Root).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_a_command_makes_give_no_privilege_under_an_unprivileged_server() {
    files_it_makes_give_no_privilege(As::Nobody).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_servers_commands_are_a_user_the_host_does_not_know() {
    let target = server(As::Root, &[]).await;
    let reply = target.run("id -u; cat /proc/self/uid_map; echo mine > mine.txt").await;
    let output = out(&reply);
    assert!(output.starts_with("0\n"), "{output}");
    assert!(output.contains("2000000000"), "mapped to RDEV_SANDBOX_UID: {output}");
    // The project is mounted idmapped: on disk, what it wrote is the server's.
    let written = std::fs::metadata(target.dir.path().join("projects/hello/mine.txt")).unwrap();
    assert_eq!((written.uid(), written.gid()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unprivileged_servers_own_files_stay_as_they_are() {
    let target = server(As::Nobody, &[]).await;
    let dir = std::fs::canonicalize(target.dir.path()).unwrap();
    let own = ["rdev.db", "rdev.db-wal", "rdev.db-shm", "projects", "projects/sibling", "."].map(|name| dir.join(name));
    let modes = || own.iter().map(|p| std::fs::metadata(p).map(|m| m.mode()).ok()).collect::<Vec<_>>();
    let before = modes();
    let paths: Vec<String> = own.iter().map(|p| p.display().to_string()).collect();
    let reply = target
        .run(&format!(
            "chmod 0 {} 2>&1; chmod 0 ../../rdev.db ../sibling ..; touch -d 2001-01-01 ..; echo end",
            paths.join(" ")
        ))
        .await;
    assert!(out(&reply).contains("end"), "{reply}");
    assert_eq!(modes(), before, "{reply}");
    assert_eq!(target.run("echo still").await["stdout"], "still\n");
    let projects = target.server.get_json("/projects", &target.admin).await;
    assert!(projects.to_string().contains("sibling"), "{projects}");
}

/// The host's terminals (an operator's login, another key's terminal) are not in a command's
/// devpts: only its own are.
async fn host_terminals_are_out_of_reach(who: As) {
    let target = server(who, &[]).await;
    let pty = nix::pty::openpty(None, None).unwrap();
    let name = nix::unistd::ttyname(&pty.slave).unwrap();
    let number = name.file_name().unwrap().to_string_lossy().into_owned();
    let reply = target
        .run(&format!(
            "ls /dev/pts; echo typed > /dev/pts/{number}; cat /dev/pts/{number}; python3 -c 'import os; os.openpty(); print(\"own pty\")'"
        ))
        .await;
    let output = out(&reply);
    assert!(reply["stdout"].as_str().unwrap().starts_with("ptmx\n"), "{output}");
    assert!(output.contains("own pty"), "a command may open terminals of its own: {output}");
    nix::fcntl::fcntl(&pty.master, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK)).unwrap();
    let mut buf = [0u8; 64];
    assert!(nix::unistd::read(&pty.master, &mut buf).is_err(), "nothing reached the host's terminal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_terminals_are_out_of_reach_of_a_root_servers_commands() {
    host_terminals_are_out_of_reach(As::Root).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_terminals_are_out_of_reach_of_an_unprivileged_servers_commands() {
    host_terminals_are_out_of_reach(As::Nobody).await;
}

/// Connects to 127.0.0.1:`port` from a command; prints `connected` or the error.
fn connect(port: u16) -> String {
    format!(
        "python3 -c 'import socket\ntry:\n socket.create_connection((\"127.0.0.1\", {port}), timeout=5); print(\"connected\")\nexcept OSError as e:\n print(\"refused\", e)'"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_reach_no_host_service_but_have_a_loopback_of_their_own() {
    let target = server(As::Root, &[]).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let reply = target.run(&connect(port)).await;
    assert!(out(&reply).contains("refused"), "{reply}");
    let sockets = target.run("cat /proc/net/tcp /proc/net/tcp6 /proc/net/unix").await;
    assert!(
        !out(&sockets).to_uppercase().contains(&format!(":{port:04X}")),
        "the host's sockets are listed: {sockets}"
    );
    let own = target
        .run(
            "python3 -c 'import socket\ns = socket.socket(); s.bind((\"127.0.0.1\", 0)); s.listen()\n\
             c = socket.create_connection(s.getsockname()); a, _ = s.accept(); c.sendall(b\"own loopback\"); print(a.recv(64).decode())'",
        )
        .await;
    assert_eq!(own["stdout"], "own loopback\n", "{own}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_host_network_commands_reach_the_hosts_loopback() {
    let target = server(As::Root, &[("RDEV_SANDBOX_NETWORK", "host")]).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let reply = target.run(&connect(listener.local_addr().unwrap().port())).await;
    assert_eq!(reply["stdout"], "connected\n", "{reply}");
}

/// The sizes of the host's SysV shared memory segments.
fn host_segments() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/sysvipc/shm").unwrap_or_default();
    text.lines().skip(1).filter_map(|line| line.split_whitespace().nth(3).map(str::to_owned)).collect()
}

async fn ipc_objects_end_with_the_command(who: As) {
    let target = server(who, &[]).await;
    // An odd size, to tell this segment from any other on the host.
    let made = target.run("ipcmk -M 1048573 && ipcs -m | grep -c 1048573").await;
    assert_eq!(made["stdout"].as_str().unwrap().lines().last(), Some("1"), "{made}");
    assert!(!host_segments().contains(&"1048573".to_owned()), "the segment is the host's: {:?}", host_segments());
    let other = target.run_in("sibling", "ipcs -m | grep -c 1048573; true").await;
    assert_eq!(other["stdout"], "0\n", "another command sees it: {other}");
    let same = target.run("ipcs -m | grep -c 1048573; true").await;
    assert_eq!(same["stdout"], "0\n", "it outlived its command: {same}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipc_objects_end_with_the_command_of_a_root_server() {
    ipc_objects_end_with_the_command(As::Root).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipc_objects_end_with_the_command_of_an_unprivileged_server() {
    ipc_objects_end_with_the_command(As::Nobody).await;
}

/// `keyctl`, `add_key` and `request_key` through Python (no keyutils needed), each printing
/// its result and errno.
const KEYRING_CALLS: &str = "python3 -c 'import ctypes\nl = ctypes.CDLL(None, use_errno=True)\n\
    print(\"add\", l.syscall(248, b\"user\", b\"left\", b\"by a command\", 12, -4), ctypes.get_errno())\n\
    print(\"request\", l.syscall(249, b\"user\", b\"host-secret\", None, 0), ctypes.get_errno())\n\
    print(\"read\", l.syscall(250, 11, KEY, None, 0), ctypes.get_errno())'";

async fn keyrings_are_out_of_reach(who: As) {
    let target = server(who, &[]).await;
    let secret = c"a host secret";
    // SAFETY: add_key with valid strings and the user keyring of this (root) process.
    let key = unsafe {
        libc::syscall(libc::SYS_add_key, c"user".as_ptr(), c"host-secret".as_ptr(), secret.as_ptr(), 13usize, -4i32)
    };
    assert!(key > 0, "the test keeps a key in root's keyring");
    let reply = target.run(&KEYRING_CALLS.replace("KEY", &key.to_string())).await;
    // SAFETY: revokes the key made above.
    unsafe { libc::syscall(libc::SYS_keyctl, 3, key) };
    assert_eq!(reply["stdout"], "add -1 1\nrequest -1 1\nread -1 1\n", "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyrings_are_out_of_reach_of_a_root_servers_commands() {
    keyrings_are_out_of_reach(As::Root).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyrings_are_out_of_reach_of_an_unprivileged_servers_commands() {
    keyrings_are_out_of_reach(As::Nobody).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_projects_socket_is_out_of_reach() {
    let target = server(As::Root, &[]).await;
    let socket = std::fs::canonicalize(target.dir.path()).unwrap().join("projects/sibling/service.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let reply = target
        .run(&format!(
            "python3 -c 'import socket\ns = socket.socket(socket.AF_UNIX)\ntry:\n s.connect(\"{}\"); print(\"connected\")\nexcept OSError as e:\n print(\"refused\", e)'",
            socket.display()
        ))
        .await;
    assert!(out(&reply).contains("refused"), "{reply}");
}

/// `GET /health`'s time while `busy` runs.
async fn health_while(target: &Target, busy: impl std::future::Future<Output = Value>) -> (Value, Duration) {
    let probe = async {
        let mut slowest = Duration::ZERO;
        for _ in 0..20 {
            let started = Instant::now();
            let health = crate::support::http_client().get(target.server.url("/health")).send().await.unwrap();
            assert_eq!(health.status(), 200);
            slowest = slowest.max(started.elapsed());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        slowest
    };
    tokio::join!(busy, probe)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_past_a_limit_is_stopped_and_the_next_one_runs() {
    let envs = [("RDEV_SANDBOX_MEMORY", "256MiB"), ("RDEV_SANDBOX_PIDS", "100"), ("RDEV_SANDBOX_TMP_SIZE", "64MiB")];
    let target = server(As::Root, &envs).await;

    let (memory, slowest) =
        health_while(&target, target.run("python3 -c 's = b\"x\" * (600 << 20); print(len(s))'")).await;
    assert_eq!(memory["exit_code"], 137, "{memory}");
    let error = memory["error"].as_str().unwrap_or_default();
    assert!(error.contains("memory limit (256 MiB, RDEV_SANDBOX_MEMORY)"), "{memory}");
    assert!(slowest < Duration::from_secs(1), "/health took {slowest:?}");
    assert_eq!(target.run("echo fine").await["stdout"], "fine\n");

    let (pids, slowest) = health_while(&target, target.run("for i in $(seq 300); do sleep 2 & done; wait")).await;
    assert_ne!(pids["exit_code"], 0, "{pids}");
    assert!(pids["error"].as_str().unwrap_or_default().contains("process limit (100, RDEV_SANDBOX_PIDS)"), "{pids}");
    assert!(slowest < Duration::from_secs(1), "/health took {slowest:?}");
    assert_eq!(target.run("echo fine").await["error"], Value::Null);

    let tmp = target
        .run("df -B1 --output=size /tmp /dev/shm | tail -n 2; head -c 100M /dev/zero > /tmp/big; echo wrote=$?")
        .await;
    let output = out(&tmp);
    let sizes: Vec<&str> = output.lines().take(2).map(str::trim).collect();
    assert_eq!(sizes, [(64 << 20).to_string(), (64 << 20).to_string()], "{output}");
    assert!(output.contains("wrote=1") && output.contains("No space left on device"), "{output}");
    assert_eq!(target.run("ls /tmp; echo fine").await["stdout"], "fine\n", "the next command's /tmp is its own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_cannot_open_more_terminals_than_its_own_devpts_allows() {
    let target = server(As::Root, &[]).await;
    let reply = target
        .run("python3 -c 'import os\nptys = []\ntry:\n while True: ptys.append(os.openpty())\nexcept OSError as e:\n print(len(ptys), e.errno)'")
        .await;
    assert_eq!(reply["stdout"], "64 28\n", "{reply}");
}

/// The server refuses to start where limits are asked for and no cgroup is writable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_writable_cgroup_stops_the_start_unless_limits_are_off() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    std::fs::create_dir_all(dir.path().join("projects")).unwrap();
    for path in [dir.path().to_path_buf(), dir.path().join("projects")] {
        std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let program = dir.path().join("rdev-api");
    std::fs::copy(crate::support::process::BIN, &program).unwrap();
    let mut command = tokio::process::Command::new(&program);
    command.uid(NOBODY).gid(NOBODY).current_dir(dir.path()).env_clear().env("PATH", "/usr/bin:/bin");
    let output = command.env("RDEV_LISTEN", "127.0.0.1:0").output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("writable cgroup") && stderr.contains("RDEV_SANDBOX_LIMITS=off"), "{stderr}");

    let off =
        crate::support::process::ServerProcess::start_as(dir.path(), &[("RDEV_SANDBOX_LIMITS", "off")], NOBODY).await;
    assert!(off.output().contains("limits=\"off\""), "{}", off.output());
}

/// A test host at a public address, in a network namespace of its own joined to this host by
/// a veth pair; it answers one TCP connection on `port` with `public host`.
struct PublicHost {
    namespace: String,
    link: String,
    address: String,
    server: tokio::process::Child,
}

const PUBLIC_HOST_PORT: u16 = 8443;

impl PublicHost {
    async fn start() -> Self {
        let n = std::process::id() % 100_000;
        // 198.20.0.0/16 is public (the benchmarking block is 198.18.0.0/15), and no traffic to
        // it leaves this machine: the veth route is more specific than the default one.
        let (octet_a, octet_b) = ((n / 250) % 250, n % 250);
        let host_side = format!("198.20.{octet_a}.{}", 1 + 4 * (octet_b % 60));
        let address = format!("198.20.{octet_a}.{}", 2 + 4 * (octet_b % 60));
        let (namespace, link, peer) = (format!("rdev-pub-{n}"), format!("rdh{n}"), format!("rdt{n}"));
        let ip = |args: &str| {
            let status = std::process::Command::new("ip").args(args.split(' ')).status().unwrap();
            assert!(status.success(), "ip {args}");
        };
        ip(&format!("netns add {namespace}"));
        ip(&format!("link add {link} type veth peer name {peer}"));
        ip(&format!("link set {peer} netns {namespace}"));
        ip(&format!("addr add {host_side}/30 dev {link}"));
        ip(&format!("link set {link} up"));
        ip(&format!("-n {namespace} addr add {address}/30 dev {peer}"));
        ip(&format!("-n {namespace} link set {peer} up"));
        ip(&format!("-n {namespace} link set lo up"));
        let script = format!(
            "import socket\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('{address}', {PUBLIC_HOST_PORT})); s.listen(); print('ready', flush=True)\n\
             while True:\n c, _ = s.accept(); c.sendall(b'public host'); c.close()"
        );
        let mut server = tokio::process::Command::new("ip")
            .args(["netns", "exec", &namespace, "python3", "-c", &script])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut ready = String::new();
        let stdout = server.stdout.take().unwrap();
        tokio::io::AsyncBufReadExt::read_line(&mut tokio::io::BufReader::new(stdout), &mut ready).await.unwrap();
        assert_eq!(ready, "ready\n");
        Self { namespace, link, address, server }
    }
}

impl Drop for PublicHost {
    fn drop(&mut self) {
        let _ = self.server.start_kill();
        let _ = std::process::Command::new("ip").args(["link", "del", &self.link]).status();
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.namespace]).status();
    }
}

/// Connects to `host:port` from a command; prints what the other side sent, or the error.
fn fetch(host: &str, port: u16) -> String {
    format!(
        "python3 -c 'import socket\ntry:\n c = socket.create_connection((\"{host}\", {port}), timeout=3); print(c.recv(64).decode() or \"connected\")\nexcept OSError as e:\n print(\"refused\", e)'"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_public_network_commands_reach_public_addresses_only() {
    let public = PublicHost::start().await;
    let target = server(As::Root, &[("RDEV_SANDBOX_NETWORK", "public")]).await;
    let reached = target.run(&fetch(&public.address, PUBLIC_HOST_PORT)).await;
    assert_eq!(reached["stdout"], "public host\n", "{reached}");

    // Everything of the host's, and every non-public block, stays out of reach.
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut host_addresses: Vec<String> = nix::ifaddrs::getifaddrs()
        .unwrap()
        .filter_map(|a| a.address?.as_sockaddr_in().map(|v4| v4.ip().to_string()))
        .collect();
    host_addresses.extend(["10.255.255.53".into(), "169.254.169.254".into(), "192.168.1.1".into()]);
    for address in host_addresses {
        let reply = target.run(&fetch(&address, port)).await;
        assert!(out(&reply).contains("refused"), "{address}: {reply}");
    }
    let resolver = target.run("cat /etc/resolv.conf").await;
    assert_eq!(resolver["stdout"], "nameserver 169.254.53.53\n", "{resolver}");
}
