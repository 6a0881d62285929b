//! A command is untrusted code: tried as an attacker would, it reaches nothing of the server's
//! (environment, memory, database, other projects), with the server running as root and as an
//! unprivileged user. The real binary runs here, with its secrets in its environment as in
//! production.

use std::{os::unix::fs::chown, path::Path};

use rdev_api::domain::ApiKeySecret;
use serde_json::{Value, json};

use crate::support::{Db, TestApp, fresh_database, process::ServerProcess};

/// What a sibling project keeps, which no other project's command may read.
const SIBLING_SECRET: &str = "sibling-secret-7f3a91";
/// The first bytes of every SQLite database file.
const SQLITE_HEADER: &str = "SQLite format 3";
/// The unprivileged user the second run uses.
pub(crate) const NOBODY: u32 = 65534;

pub(crate) struct Target {
    pub(crate) server: ServerProcess,
    pub(crate) admin: String,
    pub(crate) database_url: String,
    pub(crate) dir: tempfile::TempDir,
}

/// Where the server keeps its files: under `/tmp` a command's private `/tmp` covers them; under
/// `/var/tmp` only Landlock stands between them and the command.
#[derive(Clone, Copy)]
pub(crate) enum Home {
    Tmp,
    VarTmp,
}

async fn start(db: Db, uid: Option<u32>, home: Home) -> Target {
    start_with(db, uid, home, &[]).await
}

/// A server (as root, or as `uid`) with `envs` besides its database and admin key.
pub(crate) async fn start_with(db: Db, uid: Option<u32>, home: Home, envs: &[(&str, &str)]) -> Target {
    let dir = match home {
        Home::Tmp => tempfile::tempdir(),
        Home::VarTmp => tempfile::tempdir_in("/var/tmp"),
    }
    .unwrap();
    let database_url = fresh_database(db, dir.path()).await;
    let projects = dir.path().join("projects");
    std::fs::create_dir_all(projects.join("hello")).unwrap();
    std::fs::create_dir_all(projects.join("sibling")).unwrap();
    std::fs::write(projects.join("sibling/secret.txt"), SIBLING_SECRET).unwrap();
    if let Some(uid) = uid {
        chown_all(dir.path(), uid);
    }
    let admin = ApiKeySecret::generate().expose().to_owned();
    let mut envs = envs.to_vec();
    envs.extend([("DATABASE_URL", database_url.as_str()), ("RDEV_BOOTSTRAP_API_KEY", admin.as_str())]);
    let server = match uid {
        None => ServerProcess::start(dir.path(), &envs).await,
        Some(uid) => ServerProcess::start_as(dir.path(), &envs, uid).await,
    };
    Target { server, admin, database_url, dir }
}

fn chown_all(path: &Path, uid: u32) {
    chown(path, Some(uid), Some(uid)).unwrap();
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            chown_all(&entry.unwrap().path(), uid);
        }
    }
}

impl Target {
    pub(crate) async fn run(&self, command: &str) -> Value {
        self.run_in("hello", command).await
    }

    /// Runs `command` in `project` with the admin key; the answer must be 200.
    pub(crate) async fn run_in(&self, project: &str, command: &str) -> Value {
        let reply = crate::support::http_client()
            .post(self.server.url(&format!("/projects/{project}/shell")))
            .header("X-API-Key", &self.admin)
            .json(&json!({"command": command, "timeout_secs": 20}))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200);
        reply.json().await.unwrap()
    }

    /// Runs `command` and checks that nothing secret came back on either stream.
    async fn attack(&self, command: &str) -> Value {
        let reply = self.run(command).await;
        let output = format!("{}{}", reply["stdout"].as_str().unwrap(), reply["stderr"].as_str().unwrap());
        for secret in [self.admin.as_str(), self.database_url.as_str(), SQLITE_HEADER, SIBLING_SECRET] {
            assert!(!output.contains(secret), "{command:?} revealed {secret:?}:\n{output}");
        }
        reply
    }
}

async fn commands_reach_nothing_of_the_server(db: Db, uid: Option<u32>, home: Home) {
    let target = start(db, uid, home).await;
    let dir = std::fs::canonicalize(target.dir.path()).unwrap();
    let database = dir.join("rdev.db");
    let sibling = dir.join("projects/sibling/secret.txt");
    let server_pid = target.server.pid();

    let normal = target.run("echo ok > mine.txt && cat mine.txt && ls /usr/bin/env").await;
    assert_eq!(normal["stdout"], "ok\n/usr/bin/env\n", "the project and the system stay usable: {normal}");

    target.attack("tr '\\0' '\\n' </proc/$PPID/environ").await;
    target.attack("cat /proc/*/environ | tr '\\0' '\\n'; ls /proc").await;
    target.attack(&format!("cat /proc/{server_pid}/environ /proc/{server_pid}/cmdline")).await;
    let mem = target.attack("head -c 64 /proc/$PPID/mem; head -c 64 /proc/1/mem; echo read=$?").await;
    assert!(mem["stderr"].as_str().unwrap().contains("Permission denied"), "{mem}");
    target.attack(&format!("cat ../../rdev.db {db} {db}-wal", db = database.display())).await;
    // Under /tmp the path leads into the command's private /tmp; elsewhere it is refused.
    target.attack(&format!("echo owned >> {db}; echo owned >> ../../rdev.db", db = database.display())).await;
    target.attack(&format!("ls ..; cat ../sibling/secret.txt {}; ls {}", sibling.display(), dir.display())).await;
    target.attack("grep -a rdev_ /proc/[0-9]*/environ /proc/[0-9]*/cmdline /proc/[0-9]*/maps 2>&1").await;

    if let Ok(bytes) = std::fs::read(&database) {
        assert!(!String::from_utf8_lossy(&bytes).contains("owned"), "the database was not written");
    }
    assert_eq!(target.run("true").await["exit_code"], 0, "the server still works on its database");
    assert_eq!(std::fs::read_to_string(&sibling).unwrap(), SIBLING_SECRET, "the sibling is untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_reach_nothing_of_a_root_server_on_sqlite() {
    commands_reach_nothing_of_the_server(Db::Sqlite, None, Home::VarTmp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_reach_nothing_of_a_root_server_with_its_files_in_tmp() {
    commands_reach_nothing_of_the_server(Db::Sqlite, None, Home::Tmp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_reach_nothing_of_a_root_server_on_postgres() {
    commands_reach_nothing_of_the_server(Db::Postgres, None, Home::VarTmp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_reach_nothing_of_an_unprivileged_server() {
    commands_reach_nothing_of_the_server(Db::Sqlite, Some(NOBODY), Home::VarTmp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_reach_nothing_of_an_unprivileged_server_with_its_files_in_tmp() {
    commands_reach_nothing_of_the_server(Db::Sqlite, Some(NOBODY), Home::Tmp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_of_a_root_server_hold_no_capability() {
    let target = start(Db::Sqlite, None, Home::VarTmp).await;
    let status = target.run("grep -E '^Cap(Eff|Prm|Bnd|Amb)' /proc/self/status; id -u").await;
    let stdout = status["stdout"].as_str().unwrap();
    assert_eq!(stdout.matches("0000000000000000").count(), 4, "{stdout}");
    let host = target.attack("cat /etc/shadow; echo x > /etc/rdev-owned; ls /root; ls /run").await;
    assert!(!Path::new("/etc/rdev-owned").exists(), "{host}");
    assert!(!host["stdout"].as_str().unwrap().contains("root:"), "{host}");
}

/// The sandbox helpers this test process started (one per app).
fn helper_pids() -> Vec<i32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let parent = stat.rsplit_once(") ").and_then(|(_, rest)| rest.split(' ').nth(1)).unwrap_or_default();
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            parent == me && String::from_utf8_lossy(&cmdline).contains("__sandbox-helper")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_helper_that_dies_is_started_again() {
    let app = TestApp::on(Db::Sqlite).await;
    let helpers = helper_pids();
    assert_eq!(helpers.len(), 1, "one helper: {helpers:?}");
    let pid = nix::unistd::Pid::from_raw(helpers[0]);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let ready = app.send(app.client.get(app.url("/ready"))).await;
        if ready.body["checks"]["executor"] == "sandbox helper restarting" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the loss was never noticed: {}", ready.body);
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let reply = app.shell("hello", json!({"command": "echo again"})).await;
    assert_eq!((reply.status, reply.body["stdout"].as_str()), (200, Some("again\n")), "{}", reply.body);
    assert_eq!(app.send(app.client.get(app.url("/ready"))).await.body["checks"]["executor"], "ok");
    assert_ne!(helper_pids(), helpers, "a new helper");
}
