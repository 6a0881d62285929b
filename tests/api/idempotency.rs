//! `Idempotency-Key`: a repeated request runs once, on any replica, and gets the first answer.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::{
    on_both_databases,
    support::{Db, Reply, TestApp},
};

on_both_databases!(
    two_identical_requests_on_two_replicas_run_once,
    a_queued_command_is_enqueued_once_per_key,
    keys_are_checked_and_belong_to_their_api_key,
    a_stored_answer_costs_about_its_output_not_its_json,
);

async fn keyed(app: &TestApp, path: &str, key: &str, body: Value) -> Reply {
    let request = app.client.post(app.url(path)).header("X-API-Key", &app.admin_key).header("Idempotency-Key", key);
    app.send(request.json(&body)).await
}

async fn two_identical_requests_on_two_replicas_run_once(db: Db) {
    let app = TestApp::on(db).await;
    let replica = app.replica(|_| {}).await;
    let body = json!({"command": "echo ran >> side-effect; while [ ! -f go ]; do sleep 0.02; done; echo done"});
    let conflict_seen = Notify::new();
    let send = |target: &'static str| {
        let on = if target == "a" { &app } else { &replica };
        let (body, conflict_seen) = (body.clone(), &conflict_seen);
        async move {
            let reply = keyed(on, "/projects/hello/shell", "build-1", body).await;
            if reply.status == 409 {
                conflict_seen.notify_one();
            }
            reply
        }
    };
    // The command waits for `go`, written only once the duplicate was refused: both requests
    // were in flight together.
    let release = async {
        conflict_seen.notified().await;
        std::fs::write(app.project_path("hello").join("go"), "").unwrap();
    };
    let both = async { tokio::join!(send("a"), send("b"), release) };
    let (a, b, ()) = tokio::time::timeout(Duration::from_secs(30), both).await.expect("one of them was refused");
    let (ran, refused) = if a.status == 200 { (a, b) } else { (b, a) };
    assert_eq!((ran.status, ran.body["stdout"].as_str()), (200, Some("done\n")), "{}", ran.body);
    assert_eq!((refused.status, refused.error_code()), (409, "CONFLICT"));
    let side_effect = std::fs::read_to_string(app.project_path("hello").join("side-effect")).unwrap();
    assert_eq!(side_effect, "ran\n", "one run");

    for on in [&app, &replica] {
        let again = keyed(on, "/projects/hello/shell", "build-1", body.clone()).await;
        assert_eq!(again.status, 200);
        assert_eq!(again.headers["idempotent-replayed"], "true");
        assert_eq!(again.body, ran.body, "the first answer, byte for byte");
    }
    assert!(ran.headers.get("idempotent-replayed").is_none(), "the first answer is not a replay");
    let other_body = keyed(&replica, "/projects/hello/shell", "build-1", json!({"command": "echo other"})).await;
    assert_eq!((other_body.status, other_body.error_code()), (422, "IDEMPOTENCY_KEY_REUSED"));
    let other_path = keyed(&replica, "/projects/hello/commands", "build-1", body.clone()).await;
    assert_eq!((other_path.status, other_path.error_code()), (422, "IDEMPOTENCY_KEY_REUSED"));
    let side_effect = std::fs::read_to_string(app.project_path("hello").join("side-effect")).unwrap();
    assert_eq!(side_effect, "ran\n", "still one run");
}

async fn a_queued_command_is_enqueued_once_per_key(db: Db) {
    let app = TestApp::on(db).configure(|config| config.queue.workers = 0).await;
    let replica = app.replica(|config| config.queue.workers = 0).await;
    let body = json!({"command": "echo queued", "priority": 3});
    let first = keyed(&app, "/projects/hello/commands", "job-7", body.clone()).await;
    assert_eq!(first.status, 202, "{}", first.body);
    let again = keyed(&replica, "/projects/hello/commands", "job-7", body).await;
    assert_eq!(again.status, 202);
    assert_eq!(again.headers["location"], first.headers["location"]);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body["id"], first.body["id"]);
    let listed = app.get("/commands?project_id=hello", &app.admin_key).await;
    assert_eq!(listed.body["commands"].as_array().unwrap().len(), 1, "enqueued once");
}

async fn keys_are_checked_and_belong_to_their_api_key(db: Db) {
    let app = TestApp::on(db).configure(|config| config.queue.workers = 0).await;
    for bad in ["", &"k".repeat(256), "has space"] {
        let reply = keyed(&app, "/projects/hello/commands", bad, json!({"command": "true"})).await;
        assert_eq!((reply.status, reply.error_code()), (400, "VALIDATION_FAILED"), "{bad:?}");
        assert!(reply.field_error("Idempotency-Key").is_some());
    }
    // A refused request holds no key: the same key works for a valid request afterwards.
    let invalid = keyed(&app, "/projects/hello/commands", "k1", json!({"command": ""})).await;
    assert_eq!(invalid.status, 400);
    let valid = keyed(&app, "/projects/hello/commands", "k1", json!({"command": "true"})).await;
    assert_eq!(valid.status, 202, "{}", valid.body);

    // Another API key's `k1` is its own.
    let (_, other) = app.create_key(&["commands:execute"]).await;
    let request = app.client.post(app.url("/projects/hello/commands")).header("X-API-Key", &other);
    let theirs = app.send(request.header("Idempotency-Key", "k1").json(&json!({"command": "echo theirs"}))).await;
    assert_eq!(theirs.status, 202, "{}", theirs.body);
    assert!(theirs.headers.get("idempotent-replayed").is_none());
    assert_ne!(theirs.body["id"], valid.body["id"]);
}

/// 1 MiB of control bytes is 6 MiB of JSON: the stored answer is deflated, so a key's repeats
/// cost the database about the output, and the replay is the same answer byte for byte.
async fn a_stored_answer_costs_about_its_output_not_its_json(db: Db) {
    let app = TestApp::on(db).await;
    let command = json!({"command": "head -c 1048576 /dev/zero | tr '\\0' '\\1'"});
    let first = app
        .client
        .post(app.url("/projects/hello/shell"))
        .header("X-API-Key", &app.admin_key)
        .header("Idempotency-Key", "big")
        .json(&command);
    let first = first.send().await.unwrap().text().await.unwrap();
    assert!(first.len() > 6 << 20, "the answer is JSON-escaped: {} bytes", first.len());
    let stored: i64 = match db {
        Db::Postgres => sqlx::query_scalar(
            "SELECT (COALESCE(octet_length(body), 0) + COALESCE(octet_length(body_deflated), 0))::bigint
             FROM idempotency_keys",
        )
        .fetch_one(&sqlx::PgPool::connect(&app.database_url).await.unwrap())
        .await
        .unwrap(),
        Db::Sqlite => sqlx::query_scalar(
            "SELECT COALESCE(length(CAST(body AS BLOB)), 0) + COALESCE(length(body_deflated), 0) FROM idempotency_keys",
        )
        .fetch_one(&sqlx::SqlitePool::connect(&app.database_url).await.unwrap())
        .await
        .unwrap(),
    };
    println!("{db:?}: a {} byte answer stored in {stored} bytes", first.len());
    assert!(stored < 256 << 10, "{stored} bytes stored");
    let again = app
        .client
        .post(app.url("/projects/hello/shell"))
        .header("X-API-Key", &app.admin_key)
        .header("Idempotency-Key", "big")
        .json(&command)
        .send()
        .await
        .unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.text().await.unwrap(), first, "the same answer");
}
