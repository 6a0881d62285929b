//! Every process started is audited, whatever ends it: a client that goes away, a shutdown, a
//! worker that dies with its replica (its command lost, or retried).

use std::time::Duration;

use rdev_api::{
    adapters::Database,
    domain::{ApiKeySecret, AuditEntry, AuditFilter, PageRequest, ProjectId},
};
use serde_json::{Value, json};

use super::{eventually, executions_audited, runs};
use crate::{
    on_both_databases,
    support::{Db, TestApp, fresh_database, live_processes_with, process::ServerProcess, survivors_of},
};

on_both_databases!(
    a_client_that_goes_away_gets_its_command_killed_and_audited,
    a_shutdown_stops_and_audits_the_commands_still_running,
    sigterm_ends_the_process_within_the_grace_whatever_clients_hold,
    the_commands_of_a_dead_worker_are_audited_by_whoever_takes_them_back,
);

fn marker() -> String {
    format!("300.{}", uuid::Uuid::new_v4().as_u128() % 1_000_000)
}

async fn a_client_that_goes_away_gets_its_command_killed_and_audited(db: Db) {
    let app = TestApp::on(db).await;
    let marker = marker();
    let request = app
        .client
        .post(app.url("/projects/hello/shell"))
        .header("X-API-Key", &app.admin_key)
        .json(&json!({"command": format!("echo r >> runs; sleep {marker} & sleep {marker}")}))
        .send();
    let client = tokio::spawn(request);
    eventually("the command started", Duration::from_secs(10), async || runs(&app, "hello", "runs") == 1).await;
    client.abort();

    eventually("its audit entry", Duration::from_secs(10), async || {
        executions_audited(&app, "hello").await.first().is_some_and(|e| e["outcome"] == "cancelled")
    })
    .await;
    assert_eq!(survivors_of(&marker).await, Vec::<u32>::new(), "killed, with what it started");
    assert_eq!(executions_audited(&app, "hello").await.len(), 1);
}

/// A server process on a database of its own, with the `hello` project.
struct Server {
    process: ServerProcess,
    url: String,
    admin: String,
    dir: tempfile::TempDir,
}

impl Server {
    async fn start(db: Db, extra: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("projects/hello")).unwrap();
        let url = fresh_database(db, dir.path()).await;
        let admin = ApiKeySecret::generate().expose().to_owned();
        let process = Self::process(&dir, &url, &admin, extra).await;
        Self { process, url, admin, dir }
    }

    async fn process(dir: &tempfile::TempDir, url: &str, admin: &str, extra: &[(&str, &str)]) -> ServerProcess {
        let mut envs = vec![("DATABASE_URL", url), ("RDEV_BOOTSTRAP_API_KEY", admin)];
        envs.extend_from_slice(extra);
        ServerProcess::start(dir.path(), &envs).await
    }

    fn runs(&self, file: &str) -> usize {
        std::fs::read_to_string(self.dir.path().join("projects/hello").join(file)).map_or(0, |t| t.lines().count())
    }

    /// The audit entries of executions in `hello`, read from the database itself.
    async fn audited(&self) -> Vec<AuditEntry> {
        let database = Database::connect(&self.url, 1).await.unwrap();
        let filter = AuditFilter { project_id: Some(ProjectId::parse("hello").unwrap()), ..Default::default() };
        let page = PageRequest { limit: 500, after: None };
        let entries = database.audit_log().list(&filter, &page).await.unwrap().items;
        database.close().await;
        entries.into_iter().filter(|e| e.outcome != rdev_api::domain::AuditOutcome::Rejected).collect()
    }
}

async fn a_shutdown_stops_and_audits_the_commands_still_running(db: Db) {
    let mut server = Server::start(db, &[("RDEV_SHUTDOWN_GRACE", "1s")]).await;
    let marker = marker();
    let request = crate::support::http_client()
        .post(server.process.url("/projects/hello/shell"))
        .header("X-API-Key", &server.admin)
        .json(&json!({"command": format!("echo r >> runs; sleep {marker}")}))
        .send();
    let answer = tokio::spawn(request);
    eventually("the command started", Duration::from_secs(10), async || server.runs("runs") == 1).await;

    assert!(server.process.terminate().await.success(), "{}", server.process.output());
    let answer = answer.await.unwrap().expect("the request was answered before the exit");
    assert_eq!(answer.status(), 503);
    assert!(answer.headers().contains_key("retry-after"));
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"]["code"], "EXECUTOR_UNAVAILABLE", "{body}");
    assert_eq!(survivors_of(&marker).await, Vec::<u32>::new());
    let audited = server.audited().await;
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!(audited[0].outcome, rdev_api::domain::AuditOutcome::Error);
}

/// Clients that hold what they can (a download never read, a body never finished, a command's
/// event stream) cannot keep the process past its grace and the fixed few seconds after it.
async fn sigterm_ends_the_process_within_the_grace_whatever_clients_hold(db: Db) {
    use tokio::io::AsyncWriteExt as _;
    let mut server = Server::start(db, &[("RDEV_SHUTDOWN_GRACE", "1s"), ("RDEV_HEADER_TIMEOUT", "10m")]).await;
    std::fs::write(server.dir.path().join("projects/hello/big.bin"), vec![0u8; 64 << 20]).unwrap();
    let client = crate::support::http_client();
    let download = client
        .get(server.process.url("/projects/hello/files/content?path=big.bin"))
        .header("X-API-Key", &server.admin)
        .send()
        .await
        .unwrap();
    let mut half_sent = tokio::net::TcpStream::connect(&server.process.addr).await.unwrap();
    let head = format!(
        "PUT /projects/hello/files/content?path=half HTTP/1.1\r\nHost: x\r\nX-API-Key: {}\r\nContent-Length: 1000\r\n\r\nabc",
        server.admin
    );
    half_sent.write_all(head.as_bytes()).await.unwrap();
    let marker = marker();
    let queued = server
        .process
        .post_json("/projects/hello/commands", &server.admin, &json!({"command": format!("sleep {marker}")}))
        .await;
    let events = client
        .get(server.process.url(&format!("/commands/{}/events", queued["id"].as_str().unwrap())))
        .header("X-API-Key", &server.admin)
        .send()
        .await
        .unwrap();

    let started = std::time::Instant::now();
    server.process.terminate().await;
    let took = started.elapsed();
    println!("{db:?}: exited {took:?} after SIGTERM (grace 1 s)");
    assert!(took < Duration::from_secs(10), "exited only after {took:?}");
    assert_eq!(survivors_of(&marker).await, Vec::<u32>::new());
    drop((download, half_sent, events));
}

async fn the_commands_of_a_dead_worker_are_audited_by_whoever_takes_them_back(db: Db) {
    // A short lease: a dead worker's commands are taken back a second after it died.
    let lease = [("RDEV_QUEUE_LEASE", "1s")];
    let mut server = Server::start(db, &lease).await;
    let enqueue = |command: String, max_attempts: u32| {
        let body = json!({"command": command, "max_attempts": max_attempts});
        let (process, admin) = (&server.process, &server.admin);
        async move { process.post_json("/projects/hello/commands", admin, &body).await["id"].as_str().unwrap().to_owned() }
    };
    let marker = marker();
    let once = enqueue(format!("echo r >> once; sleep {marker}"), 1).await;
    // Its second attempt ends at once.
    let twice = enqueue(format!(r#"echo r >> twice; [ "$(wc -l < twice)" -ge 2 ] || sleep {marker}"#), 2).await;
    eventually("both started", Duration::from_secs(10), async || server.runs("once") == 1 && server.runs("twice") == 1)
        .await;

    server.process.child.kill().await.unwrap();
    eventually("the sandbox ended with the server", Duration::from_secs(10), async || {
        live_processes_with(&marker).is_empty()
    })
    .await;
    let restarted = Server::process(&server.dir, &server.url, &server.admin, &lease).await;
    let status = |id: &str| {
        let (restarted, admin, path) = (&restarted, &server.admin, format!("/commands/{id}"));
        async move { restarted.get_json(&path, admin).await["status"].as_str().unwrap_or_default().to_owned() }
    };
    // The upkeep takes them back at its first round, 5 s after start.
    eventually("the retry succeeded", Duration::from_secs(20), async || status(&twice).await == "succeeded").await;
    assert_eq!(status(&once).await, "failed");
    assert_eq!((server.runs("once"), server.runs("twice")), (1, 2));

    let audited = server.audited().await;
    let mut outcomes: Vec<_> = audited.iter().map(|e| e.outcome.as_str()).collect();
    outcomes.sort();
    assert_eq!(outcomes, ["error", "error", "succeeded"], "one row per process started: {audited:?}");
    server.process = restarted;
}
