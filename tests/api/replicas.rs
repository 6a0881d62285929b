//! What must hold across replicas: two server processes on one Postgres database.

use std::time::{Duration, Instant};

use rdev_api::domain::ApiKeySecret;
use serde_json::{Value, json};

use crate::support::{Db, fresh_database, process::ServerProcess};

struct Pair {
    a: ServerProcess,
    b: ServerProcess,
    admin: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn two_replicas(extra: &[(&str, &str)]) -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database(Db::Postgres, dir.path()).await;
    let admin = ApiKeySecret::generate().expose().to_owned();
    let mut envs = vec![("DATABASE_URL", url.as_str()), ("RDEV_BOOTSTRAP_API_KEY", admin.as_str())];
    envs.extend_from_slice(extra);
    let a = ServerProcess::start(dir.path(), &envs).await;
    let b = ServerProcess::start(dir.path(), &envs).await;
    Pair { a, b, admin, client: crate::support::http_client(), _dir: dir }
}

async fn create_key(pair: &Pair, body: Value) -> (String, String) {
    let reply =
        pair.client.post(pair.a.url("/api-keys")).header("X-API-Key", &pair.admin).json(&body).send().await.unwrap();
    assert_eq!(reply.status(), 201);
    let body: Value = reply.json().await.unwrap();
    (body["id"].as_str().unwrap().to_owned(), body["key"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_together_allow_exactly_the_limit() {
    let pair = two_replicas(&[]).await;
    let (_, key) =
        create_key(&pair, json!({"name": "ten", "scopes": ["projects:read"], "rate_limit_per_minute": 10})).await;
    let mut allowed = 0;
    let mut remaining_seen = vec![];
    for i in 0..30 {
        let server = if i % 2 == 0 { &pair.a } else { &pair.b };
        let reply = pair.client.get(server.url("/projects")).header("X-API-Key", &key).send().await.unwrap();
        let header = |name: &str| reply.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
        match reply.status().as_u16() {
            200 => {
                allowed += 1;
                remaining_seen.push(header("ratelimit-remaining").unwrap());
            }
            429 => {
                let retry_after: u32 = header("retry-after").expect("429 carries Retry-After").parse().unwrap();
                assert!((1..=60).contains(&retry_after));
                assert_eq!(header("ratelimit-remaining").as_deref(), Some("0"));
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(allowed, 10, "exactly the limit, across both replicas");
    assert_eq!(
        remaining_seen,
        ["9", "8", "7", "6", "5", "4", "3", "2", "1", "0"],
        "headers count down across replicas"
    );
}

/// With a limit large enough for leases (each replica takes several hits of a second at once
/// and admits from memory), two processes hammering one key together still admit no more than
/// the limit, refuse early by at most the leases they hold, and once their seconds are over
/// give back what they did not use: the database then counts exactly the admitted requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leased_budgets_on_two_processes_never_admit_more_than_the_limit() {
    const LIMIT: usize = 400;
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database(Db::Postgres, dir.path()).await;
    let admin = ApiKeySecret::generate().expose().to_owned();
    // 1,200 requests at once from one address: past the default cap per address.
    let envs = [
        ("DATABASE_URL", url.as_str()),
        ("RDEV_BOOTSTRAP_API_KEY", admin.as_str()),
        ("RDEV_MAX_CONNECTIONS_PER_IP", "100000"),
    ];
    let a = ServerProcess::start(dir.path(), &envs).await;
    let b = ServerProcess::start(dir.path(), &envs).await;
    let pair = Pair { a, b, admin, client: crate::support::http_client(), _dir: dir };
    let body = json!({"name": "busy", "scopes": ["projects:read"], "rate_limit_per_minute": LIMIT});
    let (id, key) = create_key(&pair, body).await;
    let statuses = futures_util::future::join_all((0..3 * LIMIT).map(|i| {
        let server = if i % 2 == 0 { &pair.a } else { &pair.b };
        let request = pair.client.get(server.url("/projects")).header("X-API-Key", &key);
        async move { request.send().await.unwrap().status().as_u16() }
    }))
    .await;
    let admitted = statuses.iter().filter(|status| **status == 200).count();
    assert_eq!(admitted + statuses.iter().filter(|status| **status == 429).count(), 3 * LIMIT);
    assert!(admitted <= LIMIT, "{admitted} admitted past a limit of {LIMIT}");
    // Each replica holds at most an eighth of the limit unused at a time.
    assert!(admitted >= LIMIT - 2 * LIMIT / 8, "only {admitted} of {LIMIT} admitted");
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let counted = || async {
        let sum: Option<i64> = sqlx::query_scalar("SELECT SUM(hits) FROM rate_limit_buckets WHERE key_id = $1::uuid")
            .bind(&id)
            .fetch_one(&pool)
            .await
            .unwrap();
        sum.unwrap_or(0) as usize
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while counted().await != admitted {
        assert!(Instant::now() < deadline, "the database counts {} for {admitted} admitted", counted().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_on_one_replica_is_refused_by_the_other_within_cache_ttl() {
    let ttl = Duration::from_secs(2);
    let pair = two_replicas(&[("CACHE_TTL", "2s")]).await;
    let (id, key) = create_key(&pair, json!({"name": "leaving", "scopes": ["projects:read"]})).await;
    let status_on_b =
        || async { pair.client.get(pair.b.url("/projects")).header("X-API-Key", &key).send().await.unwrap().status() };
    assert_eq!(status_on_b().await, 200, "B has the key cached now");

    let revoked = pair
        .client
        .delete(pair.a.url(&format!("/api-keys/{id}")))
        .header("X-API-Key", &pair.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    let start = Instant::now();
    // Polling is the point here: the bound under test is a time.
    while status_on_b().await != 401 {
        assert!(start.elapsed() < ttl + Duration::from_secs(1), "B still accepts the key after CACHE_TTL");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a = pair.client.get(pair.a.url("/projects")).header("X-API-Key", &key).send().await.unwrap();
    assert_eq!(a.status(), 401, "A refuses at once");
}

/// Creates, uses and rotates keys on a server, then searches its database and its logs (at the
/// most verbose level) for any of the secrets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_database_or_the_logs() {
    for db in [Db::Sqlite, Db::Postgres] {
        let dir = tempfile::tempdir().unwrap();
        let url = fresh_database(db, dir.path()).await;
        let admin = ApiKeySecret::generate().expose().to_owned();
        let envs = [("DATABASE_URL", url.as_str()), ("RDEV_BOOTSTRAP_API_KEY", admin.as_str()), ("RUST_LOG", "trace")];
        let mut server = ServerProcess::start(dir.path(), &envs).await;
        let client = crate::support::http_client();
        let body: Value = server.post_json("/api-keys", &admin, &json!({"name": "s", "scopes": ["admin"]})).await;
        let (id, first) = (body["id"].as_str().unwrap().to_owned(), body["key"].as_str().unwrap().to_owned());
        client.get(server.url("/projects")).header("X-API-Key", &first).send().await.unwrap();
        let rotated: Value = server.post_json(&format!("/api-keys/{id}/rotate"), &admin, &json!({})).await;
        let second = rotated["key"].as_str().unwrap().to_owned();
        client
            .post(server.url("/projects/hello/shell"))
            .header("X-API-Key", &second)
            .json(&json!({"command": "true"}))
            .send()
            .await
            .unwrap();
        assert!(server.terminate().await.success());

        let stored = match db {
            Db::Sqlite => {
                let mut bytes = String::new();
                for entry in std::fs::read_dir(dir.path()).unwrap() {
                    let path = entry.unwrap().path();
                    if path.file_name().unwrap().to_string_lossy().starts_with("rdev.db") {
                        bytes.push_str(&String::from_utf8_lossy(&std::fs::read(path).unwrap()));
                    }
                }
                bytes
            }
            Db::Postgres => {
                let dump = std::process::Command::new("pg_dump").arg(&url).output().expect("pg_dump runs");
                assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
                String::from_utf8(dump.stdout).unwrap()
            }
        };
        assert!(stored.contains("api_keys") || stored.contains(&id), "the dump is real");
        let logs = server.output();
        assert!(logs.contains("TRACE") || logs.contains("DEBUG"), "verbose logging was on");
        for secret in [&admin, &first, &second] {
            assert!(!stored.contains(secret.as_str()), "{db:?} database holds a secret");
            assert!(!logs.contains(secret.as_str()), "logs hold a secret");
        }
    }
}

/// Waits until `GET /commands?status=…` lists `count` commands (60 s at most).
async fn wait_until_listed(server: &ServerProcess, key: &str, status: &str, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let listed: Value = server.get_json(&format!("/commands?status={status}&limit=500"), key).await;
        let commands = listed["commands"].as_array().unwrap().clone();
        if commands.len() >= count {
            return commands;
        }
        assert!(Instant::now() < deadline, "only {} {status} commands after 60 s", commands.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn enqueue(pair: &Pair, server: &ServerProcess, command: String) -> String {
    let reply = pair
        .client
        .post(server.url("/projects/hello/commands"))
        .header("X-API-Key", &pair.admin)
        .json(&json!({"command": command}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 202);
    reply.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_drain_200_commands_each_exactly_once() {
    let pair = two_replicas(&[("RDEV_QUEUE_WORKERS", "4")]).await;
    for n in 0..200 {
        let server = if n % 2 == 0 { &pair.a } else { &pair.b };
        enqueue(&pair, server, format!("echo {n} >> ids.txt")).await;
    }
    wait_until_listed(&pair.a, &pair.admin, "succeeded", 200).await;
    let ids = std::fs::read_to_string(pair._dir.path().join("projects/hello/ids.txt")).unwrap();
    let mut ran: Vec<u32> = ids.lines().map(|l| l.parse().unwrap()).collect();
    ran.sort_unstable();
    assert_eq!(ran, (0..200).collect::<Vec<_>>(), "every id exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_run_loses_only_what_it_was_running() {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database(Db::Postgres, dir.path()).await;
    let admin = ApiKeySecret::generate().expose().to_owned();
    let replica = |workers: &'static str| {
        [
            ("DATABASE_URL", url.clone()),
            ("RDEV_BOOTSTRAP_API_KEY", admin.clone()),
            ("RDEV_QUEUE_WORKERS", workers.to_owned()),
            ("RDEV_QUEUE_LEASE", "2s".to_owned()),
        ]
    };
    let envs = |pairs: &[(&'static str, String); 4]| -> Vec<(&'static str, String)> { pairs.to_vec() };
    let doomed_env = envs(&replica("2"));
    let doomed_env: Vec<(&str, &str)> = doomed_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut doomed = ServerProcess::start(dir.path(), &doomed_env).await;
    let client = crate::support::http_client();
    let mut ids = Vec::new();
    for n in 0..12 {
        let command = format!("echo start-{n} >> log.txt; sleep 1; echo end-{n} >> log.txt");
        let reply = client
            .post(doomed.url("/projects/hello/commands"))
            .header("X-API-Key", &admin)
            .json(&json!({"command": command}))
            .send()
            .await
            .unwrap();
        ids.push(reply.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    // Both of the doomed replica's workers are running something: kill it without warning.
    // Claimed-but-unstarted commands would rightly go back to the queue: wait for two started.
    let running = loop {
        let running = wait_until_listed(&doomed, &admin, "running", 2).await;
        if running.iter().filter(|c| c["started_at"].is_string()).count() == 2 {
            break running;
        }
    };
    let mut interrupted: Vec<String> = running.iter().map(|c| c["id"].as_str().unwrap().to_owned()).collect();
    doomed.child.start_kill().unwrap();
    doomed.child.wait().await.unwrap();

    // The survivor takes the rest once the dead replica's leases run out.
    let survivor_env = envs(&replica("2"));
    let survivor_env: Vec<(&str, &str)> = survivor_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut survivor = ServerProcess::start(dir.path(), &survivor_env).await;
    let failed = wait_until_listed(&survivor, &admin, "failed", interrupted.len()).await;
    let succeeded = wait_until_listed(&survivor, &admin, "succeeded", ids.len() - interrupted.len()).await;
    let mut lost: Vec<String> = failed.iter().map(|c| c["id"].as_str().unwrap().to_owned()).collect();
    lost.sort();
    interrupted.sort();
    assert_eq!(lost, interrupted, "exactly the commands that were running were lost");
    assert!(failed.iter().all(|c| c["error"] == "worker lost"), "{failed:?}");
    assert_eq!(succeeded.len() + failed.len(), ids.len(), "every queued command finished");
    let log = std::fs::read_to_string(dir.path().join("projects/hello/log.txt")).unwrap();
    for n in 0..12 {
        let starts = log.lines().filter(|l| *l == format!("start-{n}")).count();
        assert_eq!(starts, 1, "command {n} started exactly once:\n{log}");
    }
    assert!(survivor.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_running_command_finish_then_exits_0_within_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let admin = ApiKeySecret::generate().expose().to_owned();
    let mut server =
        ServerProcess::start(dir.path(), &[("RDEV_BOOTSTRAP_API_KEY", &admin), ("RDEV_SHUTDOWN_GRACE", "20s")]).await;
    let reply: Value = server
        .post_json("/projects/hello/commands", &admin, &json!({"command": "sleep 2; echo finished > sigterm.txt"}))
        .await;
    assert_eq!(reply["status"], "queued");
    wait_for_running(&server, &admin, reply["id"].as_str().unwrap()).await;
    let asked = Instant::now();
    assert!(server.terminate().await.success(), "exits 0");
    assert!(asked.elapsed() < Duration::from_secs(20), "within the grace");
    assert_eq!(std::fs::read_to_string(dir.path().join("projects/hello/sigterm.txt")).unwrap(), "finished\n");
}

async fn wait_for_running(server: &ServerProcess, key: &str, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let command: Value = server.get_json(&format!("/commands/{id}"), key).await;
        if command["status"] == "running" {
            return;
        }
        assert!(Instant::now() < deadline, "never started: {command}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A session lives in the database: one replica continues what another started, the lease holds
/// across them, and a restart of both loses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_continues_on_another_replica_and_survives_restarts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("projects/hello/sub")).unwrap();
    let url = fresh_database(Db::Postgres, dir.path()).await;
    let admin = ApiKeySecret::generate().expose().to_owned();
    let envs = [("DATABASE_URL", url.as_str()), ("RDEV_BOOTSTRAP_API_KEY", admin.as_str())];
    let (mut a, mut b) = (ServerProcess::start(dir.path(), &envs).await, ServerProcess::start(dir.path(), &envs).await);
    let client = crate::support::http_client();
    let created: Value = a.post_json("/projects/hello/sessions", &admin, &json!({})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let first: Value =
        a.post_json(&format!("/sessions/{id}/shell"), &admin, &json!({"command": "cd sub; export FOO='a b'"})).await;
    assert_eq!(first["session"]["workdir"], "sub", "{first}");
    let on_b: Value =
        b.post_json(&format!("/sessions/{id}/shell"), &admin, &json!({"command": "printf %s \"$FOO\"; pwd"})).await;
    assert!(
        on_b["stdout"].as_str().unwrap().starts_with("a b/") && on_b["stdout"].as_str().unwrap().ends_with("/sub\n"),
        "{on_b}"
    );

    // A runs a long command (its first output says it started); B refuses a second meanwhile.
    let running = client
        .post(a.url(&format!("/sessions/{id}/shell")))
        .header("X-API-Key", &admin)
        .header("Accept", "text/event-stream")
        .json(&json!({"command": "echo started; sleep 2; export DONE=yes"}))
        .send()
        .await
        .unwrap();
    let mut events = crate::support::sse::SseReader::new(running);
    assert_eq!(events.next().await.unwrap().data, "started\n");
    let busy = client
        .post(b.url(&format!("/sessions/{id}/shell")))
        .header("X-API-Key", &admin)
        .json(&json!({"command": "true"}))
        .send()
        .await
        .unwrap();
    assert_eq!(busy.status(), 409);
    assert_eq!(events.rest().await.last().unwrap().event, "exit");

    assert!(a.terminate().await.success() && b.terminate().await.success());
    let (a, b) = (ServerProcess::start(dir.path(), &envs).await, ServerProcess::start(dir.path(), &envs).await);
    let after: Value =
        b.post_json(&format!("/sessions/{id}/shell"), &admin, &json!({"command": "echo \"$FOO|$DONE\"; pwd"})).await;
    assert!(
        after["stdout"].as_str().unwrap().starts_with("a b|yes\n")
            && after["stdout"].as_str().unwrap().ends_with("/sub\n"),
        "{after}"
    );
    let stored = a.get_json(&format!("/sessions/{id}"), &admin).await;
    assert_eq!((stored["workdir"].as_str(), stored["env"]["DONE"].as_str()), (Some("sub"), Some("yes")));
}
