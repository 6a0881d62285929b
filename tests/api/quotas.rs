//! Per-key quotas: open terminals, live sessions, a session's variables, queued and running
//! commands. Past one, 429 `QUOTA_EXCEEDED` naming it (`details.limit`, `details.max`); what the
//! key already holds goes on, and giving one back makes room. A key's own quota (`quotas` on
//! the key) wins over the server's default.

use std::time::Duration;

use serde_json::{Value, json};

use crate::{
    on_both_databases,
    support::{Db, Reply, TestApp},
    terminal::Term,
};

on_both_databases!(
    terminals_stop_at_the_key_s_quota,
    sessions_and_their_variables_stop_at_their_quotas,
    queued_and_running_commands_stop_at_the_key_s_quota,
    quotas_are_set_per_key_and_checked
);

fn refused_for(reply: &Reply, limit: &str, max: u64) {
    assert_eq!((reply.status, reply.error_code()), (429, "QUOTA_EXCEEDED"), "{}", reply.body);
    assert_eq!(reply.body["error"]["details"], json!({"limit": limit, "max": max}), "{}", reply.body);
}

async fn key_with(app: &TestApp, scopes: &[&str], quotas: Value) -> String {
    let body = json!({"name": "quoted", "scopes": scopes, "quotas": quotas});
    let reply = app.post("/api-keys", &app.admin_key, body).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    reply.body["key"].as_str().unwrap().to_owned()
}

async fn terminals_stop_at_the_key_s_quota(db: Db) {
    let app = TestApp::on(db).configure(|c| c.server.max_terminals_per_key = 2).await;
    let key = key_with(&app, &["terminal:open"], json!({})).await;
    let first = Term::open(&app, "hello", "", Some(&key)).await.unwrap();
    let mut second = Term::open(&app, "hello", "", Some(&key)).await.unwrap();
    let refused = Term::open(&app, "hello", "", Some(&key)).await.unwrap_err();
    let reply = Reply { status: refused.status, headers: Default::default(), body: refused.body };
    refused_for(&reply, "terminals", 2);
    assert!(reply.message().contains("RDEV_MAX_TERMINALS_PER_KEY"), "{}", reply.body);
    // The open ones still work; another key has its own quota.
    second.keys("echo still-$((40+2))\n").await;
    second.until("still-42").await;
    assert!(Term::open(&app, "hello", "", Some(&app.admin_key)).await.is_ok());
    // One closed makes room for the next.
    second.keys("exit\n").await;
    second.read_to_close().await;
    Term::open(&app, "hello", "", Some(&key)).await.expect("a closed terminal gives its place back");
    drop(first);
}

async fn sessions_and_their_variables_stop_at_their_quotas(db: Db) {
    let app = TestApp::on(db).configure(|c| c.server.max_sessions_per_key = 2).await;
    let key = key_with(&app, &["commands:execute", "commands:read"], json!({})).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let created = app.post("/projects/hello/sessions", &key, json!({})).await;
        assert_eq!(created.status, 201, "{}", created.body);
        ids.push(created.body["id"].as_str().unwrap().to_owned());
    }
    let third = app.post("/projects/hello/sessions", &key, json!({})).await;
    refused_for(&third, "sessions", 2);
    assert!(third.message().contains("RDEV_MAX_SESSIONS_PER_KEY"), "{}", third.body);
    assert_eq!(app.get("/sessions", &key).await.body["sessions"].as_array().unwrap().len(), 2, "nothing was stored");
    let deleted =
        app.send(app.client.delete(app.url(&format!("/sessions/{}", ids[0]))).header("X-API-Key", &key)).await;
    assert_eq!(deleted.status, 204);
    assert_eq!(app.post("/projects/hello/sessions", &key, json!({})).await.status, 201, "a deleted one makes room");

    // A session's variables: 64 names, 64 KiB in all.
    let (_, roomy) = app.create_key(&["commands:execute"]).await;
    let many: serde_json::Map<String, Value> = (0..65).map(|i| (format!("V{i}"), json!("x"))).collect();
    refused_for(&app.post("/projects/hello/sessions", &roomy, json!({"env": many})).await, "session_variables", 64);
    let big: serde_json::Map<String, Value> = (0..3).map(|i| (format!("BIG{i}"), json!("x".repeat(30_000)))).collect();
    let reply = app.post("/projects/hello/sessions", &roomy, json!({"env": big})).await;
    refused_for(&reply, "session_variable_bytes", 65_536);
    let fits: serde_json::Map<String, Value> = (0..64).map(|i| (format!("V{i}"), json!("y".repeat(1000)))).collect();
    assert_eq!(app.post("/projects/hello/sessions", &roomy, json!({"env": fits})).await.status, 201);
}

async fn queued_and_running_commands_stop_at_the_key_s_quota(db: Db) {
    let app = TestApp::on(db)
        .configure(|c| {
            c.server.max_commands_per_key = 2;
            c.queue.workers = 0;
        })
        .await;
    let key = key_with(&app, &["commands:execute", "commands:read"], json!({})).await;
    let mut queued = Vec::new();
    for _ in 0..2 {
        let reply = app.post("/projects/hello/commands", &key, json!({"command": "true"})).await;
        assert_eq!(reply.status, 202, "{}", reply.body);
        queued.push(reply.body["id"].as_str().unwrap().to_owned());
    }
    let third = app.post("/projects/hello/commands", &key, json!({"command": "true"})).await;
    refused_for(&third, "commands", 2);
    assert!(third.message().contains("RDEV_MAX_COMMANDS_PER_KEY"), "{}", third.body);
    assert_eq!(app.post("/projects/hello/commands", &app.admin_key, json!({"command": "true"})).await.status, 202);
    app.post(&format!("/commands/{}/cancel", queued[0]), &key, json!({})).await;
    assert_eq!(app.post("/projects/hello/commands", &key, json!({"command": "true"})).await.status, 202);

    // Commands run now count too, on the replica that runs them.
    let one = key_with(&app, &["commands:execute"], json!({"commands": 1})).await;
    let running = app
        .client
        .post(app.url("/projects/hello/shell"))
        .header("X-API-Key", &one)
        .header("Accept", "text/event-stream")
        .json(&json!({"command": "sleep 30"}))
        .send()
        .await
        .unwrap();
    assert_eq!(running.status(), 200, "the stream starts once the command does");
    refused_for(&app.post("/projects/hello/shell", &one, json!({"command": "true"})).await, "commands", 1);
    drop(running);
    // The killed command gives its place back once it has ended.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reply = app.post("/projects/hello/shell", &one, json!({"command": "true"})).await;
        if reply.status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the seat never came back: {}", reply.body);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn quotas_are_set_per_key_and_checked(db: Db) {
    let app = TestApp::on(db).await;
    let created = app
        .post(
            "/api-keys",
            &app.admin_key,
            json!({"name": "q", "scopes": ["terminal:open"], "quotas": {"terminals": 3}}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["quotas"], json!({"terminals": 3, "sessions": null, "commands": null, "followers": null}));
    let id = created.body["id"].as_str().unwrap();
    let patched = app.patch(&format!("/api-keys/{id}"), &app.admin_key, json!({"quotas": {"sessions": 5}})).await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(patched.body["quotas"], json!({"terminals": null, "sessions": 5, "commands": null, "followers": null}));
    assert_eq!(app.get(&format!("/api-keys/{id}"), &app.admin_key).await.body["quotas"]["sessions"], 5, "stored");

    let bad = app.patch(&format!("/api-keys/{id}"), &app.admin_key, json!({"quotas": {"terminals": 0}})).await;
    assert_eq!((bad.status, bad.error_code()), (400, "VALIDATION_FAILED"), "{}", bad.body);
    assert!(bad.field_error("quotas.terminals").is_some(), "{}", bad.body);
    let unknown = app.patch(&format!("/api-keys/{id}"), &app.admin_key, json!({"quotas": {"ptys": 1}})).await;
    assert_eq!(unknown.status, 400, "{}", unknown.body);
}
