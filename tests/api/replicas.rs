//! What must hold across replicas: two server processes on one Postgres database.

use std::time::{Duration, Instant};

use rdev_api::domain::ApiKeySecret;
use serde_json::{Value, json};

use crate::{
    helpers::{Db, fresh_database},
    process::ServerProcess,
};

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
    Pair { a, b, admin, client: reqwest::Client::new(), _dir: dir }
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
        let client = reqwest::Client::new();
        let body: Value = client
            .post(server.url("/api-keys"))
            .header("X-API-Key", &admin)
            .json(&json!({"name": "s", "scopes": ["admin"]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let (id, first) = (body["id"].as_str().unwrap().to_owned(), body["key"].as_str().unwrap().to_owned());
        client.get(server.url("/projects")).header("X-API-Key", &first).send().await.unwrap();
        let rotated: Value = client
            .post(server.url(&format!("/api-keys/{id}/rotate")))
            .header("X-API-Key", &admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
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
