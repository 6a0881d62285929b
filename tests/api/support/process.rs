//! Running the real `rdev-api` binary as a separate process, with its output captured, for the
//! tests that need several replicas or must read the logs.

use std::{process::Stdio, sync::Arc};

use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::{Child, Command},
    sync::watch,
};

pub const BIN: &str = env!("CARGO_BIN_EXE_rdev-api");

pub struct ServerProcess {
    pub child: Child,
    /// `host:port` it listens on.
    pub addr: String,
    /// Everything it printed so far, stdout and stderr, observable as it grows.
    output: Arc<watch::Sender<String>>,
    /// The cgroups delegated to an unprivileged server, removed when it is dropped.
    delegated: Vec<std::path::PathBuf>,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if let Some(pid) = self.child.id() {
            // The server's processes must be gone before their cgroups can be removed.
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
        }
        self.delegated.iter().for_each(|dir| remove_cgroup(dir));
    }
}

/// Cgroup v1 controllers an unprivileged server is given, as an operator would delegate them.
const DELEGATED: &[&str] = &["memory", "pids"];

/// Makes a cgroup below this process's own in each delegated hierarchy, owned by `uid`.
fn delegate_cgroups(uid: u32) -> Vec<std::path::PathBuf> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let name = format!("rdev-test-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let mut dirs = Vec::new();
    for controller in DELEGATED {
        let Some(path) = own.lines().find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers.split(',').any(|c| c == *controller).then(|| path.trim_start_matches('/').to_owned())
        }) else {
            continue;
        };
        let dir = std::path::Path::new("/sys/fs/cgroup").join(controller).join(path).join(&name);
        if std::fs::create_dir(&dir).is_err() {
            continue;
        }
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let _ = std::os::unix::fs::chown(entry.path(), Some(uid), Some(uid));
        }
        std::os::unix::fs::chown(&dir, Some(uid), Some(uid)).unwrap();
        dirs.push(dir);
    }
    dirs
}

/// Removes a cgroup and every cgroup below it (deepest first).
fn remove_cgroup(dir: &std::path::Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        entries.flatten().filter(|e| e.path().is_dir()).for_each(|e| remove_cgroup(&e.path()));
    }
    let _ = std::fs::remove_dir(dir);
}

impl ServerProcess {
    /// Starts the binary in `dir` with only `envs` (and PATH) and waits until it logs `listening`.
    pub async fn start(dir: &std::path::Path, envs: &[(&str, &str)]) -> Self {
        let mut server = Self::spawn(dir, envs);
        server.addr = listening_addr(&server.wait_for_line("listening").await);
        server
    }

    /// `start`, as the unprivileged user `uid` (which must be able to use `dir`).
    pub async fn start_as(dir: &std::path::Path, envs: &[(&str, &str)], uid: u32) -> Self {
        let mut server = Self::spawn_with(dir, envs, Some(uid));
        server.addr = listening_addr(&server.wait_for_line("listening").await);
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    fn spawn(dir: &std::path::Path, envs: &[(&str, &str)]) -> Self {
        Self::spawn_with(dir, envs, None)
    }

    fn spawn_with(dir: &std::path::Path, envs: &[(&str, &str)], uid: Option<u32>) -> Self {
        // Another user cannot reach the build folder; a link to the binary inside `dir` can.
        let program = match uid {
            None => std::path::PathBuf::from(BIN),
            Some(_) => {
                let link = dir.join("rdev-api");
                if std::fs::hard_link(BIN, &link).is_err() {
                    std::fs::copy(BIN, &link).expect("binary copied");
                }
                link
            }
        };
        let mut command = Command::new(program);
        let mut delegated = Vec::new();
        if let Some(uid) = uid {
            command.uid(uid).gid(uid);
            delegated = delegate_cgroups(uid);
            let procs: Vec<std::ffi::CString> = delegated
                .iter()
                .map(|dir| {
                    std::ffi::CString::new(dir.join("cgroup.procs").into_os_string().into_encoded_bytes()).unwrap()
                })
                .collect();
            // SAFETY: between fork and exec only open, write and close (async-signal-safe).
            unsafe {
                command.pre_exec(move || {
                    for file in &procs {
                        let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                        if fd >= 0 {
                            libc::write(fd, c"0".as_ptr().cast(), 1);
                            libc::close(fd);
                        }
                    }
                    Ok(())
                });
            }
        }
        command
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RDEV_LISTEN", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (name, value) in envs {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("binary starts");
        let output = Arc::new(watch::Sender::new(String::new()));
        tokio::spawn(collect(child.stdout.take().unwrap(), output.clone()));
        tokio::spawn(collect(child.stderr.take().unwrap(), output.clone()));
        Self { child, addr: String::new(), output, delegated }
    }

    /// Waits until a printed line contains `pattern`, and returns that line.
    pub async fn wait_for_line(&self, pattern: &str) -> String {
        let mut seen = self.output.subscribe();
        let found = seen.wait_for(|text| text.contains(pattern)).await.map(|text| text.clone());
        let text = found.unwrap_or_else(|_| panic!("output ended without {pattern:?}: {}", self.output()));
        text.lines().find(|line| line.contains(pattern)).unwrap_or_default().to_owned()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `GET path` with the key; the JSON body.
    pub async fn get_json(&self, path: &str, key: &str) -> serde_json::Value {
        let response = super::http_client().get(self.url(path)).header("X-API-Key", key).send().await.unwrap();
        response.json().await.unwrap()
    }

    /// `POST path` with the key and a JSON body; the JSON body of the answer.
    pub async fn post_json(&self, path: &str, key: &str, body: &serde_json::Value) -> serde_json::Value {
        let response =
            super::http_client().post(self.url(path)).header("X-API-Key", key).json(body).send().await.unwrap();
        response.json().await.unwrap()
    }

    pub fn output(&self) -> String {
        self.output.borrow().clone()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id().unwrap() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        self.child.wait().await.unwrap()
    }
}

/// The address of a `listening` log line, text or JSON.
fn listening_addr(line: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(json) => json["addr"].as_str().expect("the JSON listening line names the address").to_owned(),
        Err(_) => {
            let (_, rest) = line.split_once("addr=").expect("the listening line names the address");
            rest.split_whitespace().next().unwrap_or_default().to_owned()
        }
    }
}

/// Appends every line to `output`, waking whoever waits for a pattern.
async fn collect(stream: impl AsyncRead + Unpin, output: Arc<watch::Sender<String>>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        output.send_modify(|text| {
            text.push_str(&line);
            text.push('\n');
        });
    }
}

/// Processes whose command line contains `marker` and that are still running (zombies, which
/// only wait for their parent to reap them, do not count).
pub fn live_processes_with(marker: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return vec![] };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let proc = std::path::Path::new("/proc").join(pid.to_string());
            let cmdline = std::fs::read(proc.join("cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(proc.join("stat")).unwrap_or_default();
            let zombie = stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z'));
            String::from_utf8_lossy(&cmdline).contains(marker) && !zombie
        })
        .collect()
}

/// The processes with `marker` still running after waiting for them to go, 5 s at most: a
/// process killed with SIGKILL must still be scheduled to die, which on a loaded machine shows
/// for a moment after the kill returned. Empty when all are gone.
pub async fn survivors_of(marker: &str) -> Vec<u32> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let live = live_processes_with(marker);
        if live.is_empty() || std::time::Instant::now() >= deadline {
            return live;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
