//! A key's power ends where it should: revoking a key (or its expiry, or the end of a rotated-out
//! secret's grace) ends everything it started, on every replica within `CACHE_TTL`; a terminal
//! lives `RDEV_TERMINAL_MAX_LIFETIME` at most.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{
    on_both_databases,
    support::{Db, TestApp, sse::SseReader, survivors_of},
    terminal::Term,
};

on_both_databases!(
    revoked_on_one_replica_everything_the_key_started_on_another_ends,
    expiry_and_a_rotation_s_grace_end_running_work_too,
    a_terminal_lives_its_maximum_lifetime_at_most
);

const TTL: Duration = Duration::from_secs(2);
/// What "within CACHE_TTL" may take on a loaded machine besides: the kill and the last writes.
const SLACK: Duration = Duration::from_secs(3);

async fn queue(app: &TestApp, key: &str, command: &str) -> String {
    let reply = app.post("/projects/hello/commands", key, json!({ "command": command })).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    reply.body["id"].as_str().unwrap().to_owned()
}

fn shell_stream(app: &TestApp, key: &str, command: &str) -> reqwest::RequestBuilder {
    app.client
        .post(app.url("/projects/hello/shell"))
        .header("X-API-Key", key)
        .header("Accept", "text/event-stream")
        .json(&json!({ "command": command }))
}

/// Reads `events` to its end; the last one must be an `error` saying `why`.
async fn ends_with_error(events: &mut SseReader, why: &str) {
    let rest = tokio::time::timeout(TTL + SLACK, events.rest()).await.expect("the stream ended");
    let last = rest.last().expect("a final event");
    assert_eq!(last.event, "error", "{rest:?}");
    let body: Value = serde_json::from_str(&last.data).unwrap();
    assert_eq!(body["error"]["code"], "UNAUTHORIZED", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains(why), "{body}");
}

/// Reads a follower to its end: either it is closed first (an `error` saying `why`), or the
/// command it follows ends first and its `exit` says `why` ("…; command killed").
async fn ends_saying(events: &mut SseReader, why: &str) {
    let rest = tokio::time::timeout(TTL + SLACK, events.rest()).await.expect("the stream ended");
    let last = rest.last().expect("a final event");
    let body: Value = serde_json::from_str(&last.data).unwrap();
    let said = match last.event.as_str() {
        "error" => body["error"]["message"].as_str(),
        "exit" => body["error"].as_str(),
        other => panic!("the follower ended with {other}: {rest:?}"),
    };
    assert!(said.unwrap_or_default().contains(why), "{rest:?}");
}

async fn revoked_on_one_replica_everything_the_key_started_on_another_ends(db: Db) {
    let marker = format!("revoked-{}", uuid::Uuid::new_v4().simple());
    let a = TestApp::on(db)
        .configure(|c| {
            c.access.cache_ttl = TTL;
            c.queue.workers = 0;
        })
        .await;
    let b = a
        .replica(|c| {
            c.access.cache_ttl = TTL;
            c.queue.workers = 2;
        })
        .await;
    let scopes = ["commands:execute", "commands:read", "terminal:open", "projects:read"];
    let (id, key) = a.create_key(&scopes).await;
    let long = format!("sleep 120; echo {marker}");

    // On B: a /shell waiting for its answer, a /shell stream, two queued commands running (B's two
    // workers), a third waiting behind them, a follower of one, and a terminal.
    let shell = tokio::spawn(
        b.client.post(b.url("/projects/hello/shell")).header("X-API-Key", &key).json(&json!({"command": long})).send(),
    );
    let mut stream = SseReader::new(shell_stream(&b, &key, &format!("echo started; {long}")).send().await.unwrap());
    assert_eq!(stream.next().await.unwrap().event, "stdout");
    let running = [queue(&b, &key, &long).await, queue(&b, &key, &long).await];
    for id in &running {
        b.wait_for_command(id, |c| c["status"] == "running").await;
    }
    let waiting = queue(&b, &key, &long).await;
    let follower =
        b.client.get(b.url(&format!("/commands/{}/events", running[0]))).header("X-API-Key", &key).send().await;
    let mut follower = SseReader::new(follower.unwrap());
    let mut terminal = Term::open(&b, "hello", "", Some(&key)).await.unwrap();
    terminal.keys("echo $((6*7))\n").await;
    terminal.until("42").await;

    let revoked_at = Instant::now();
    let revoke = a.client.delete(a.url(&format!("/api-keys/{id}"))).header("X-API-Key", &a.admin_key);
    assert_eq!(revoke.send().await.unwrap().status(), 204);

    ends_with_error(&mut stream, "revoked").await;
    ends_saying(&mut follower, "revoked").await;
    let answer = tokio::time::timeout(TTL + SLACK, shell).await.expect("the /shell answered").unwrap().unwrap();
    assert_eq!(answer.status(), 401);
    let answer: Value = answer.json().await.unwrap();
    assert!(answer["error"]["message"].as_str().unwrap().contains("revoked"), "{answer}");
    tokio::time::timeout(TTL + SLACK, terminal.read_to_close()).await.expect("the terminal closed");
    assert_eq!(terminal.exit_reason.as_deref(), Some("API key has been revoked"), "{terminal:?}");
    for id in &running {
        let ended = b.wait_for_command(id, |c| c["status"] != "running").await;
        assert_eq!(ended["status"], "failed", "{ended}");
        assert_eq!(ended["error"], "API key has been revoked; command killed", "{ended}");
    }
    let cancelled = b.wait_for_command(&waiting, |c| c["status"] != "queued").await;
    assert_eq!(
        (cancelled["status"].as_str(), cancelled["error"].as_str()),
        (Some("cancelled"), Some("API key has been revoked"))
    );
    let took = revoked_at.elapsed();
    println!("{db:?}: everything of a key revoked on another replica ended in {took:?} (CACHE_TTL {TTL:?})");
    assert!(took < TTL + SLACK, "{took:?}");
    assert_eq!(survivors_of(&marker).await, Vec::<u32>::new(), "nothing the key started is left running");
    // And the terminal's end is on record, saying why.
    let audit = a.get("/audit?limit=100", &a.admin_key).await;
    let ended = audit.body["entries"].as_array().unwrap().iter().find(|e| {
        e["command"].as_str().is_some_and(|c| c.starts_with("terminal ended: closed: API key has been revoked"))
    });
    assert!(ended.is_some(), "{}", audit.body);
}

async fn expiry_and_a_rotation_s_grace_end_running_work_too(db: Db) {
    let a = TestApp::on(db).configure(|c| c.access.cache_ttl = TTL).await;
    let b = a.replica(|c| c.access.cache_ttl = TTL).await;
    // A key that expires in 3 s: its stream ends then, on its own (no database needed).
    let expires_at = (chrono::Utc::now() + chrono::Duration::seconds(3)).to_rfc3339();
    let body = json!({"name": "brief", "scopes": ["commands:execute"], "expires_at": expires_at});
    let created = a.post("/api-keys", &a.admin_key, body).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let brief = created.body["key"].as_str().unwrap().to_owned();
    let mut stream = SseReader::new(shell_stream(&b, &brief, "echo started; sleep 120").send().await.unwrap());
    assert_eq!(stream.next().await.unwrap().event, "stdout");
    ends_with_error(&mut stream, "expired").await;

    // A stream opened on B with a secret that A then rotates out with 1 s of grace.
    let (id, old) = a.create_key(&["commands:execute"]).await;
    let mut stream = SseReader::new(shell_stream(&b, &old, "echo started; sleep 120").send().await.unwrap());
    assert_eq!(stream.next().await.unwrap().event, "stdout");
    let rotated = a.post(&format!("/api-keys/{id}/rotate"), &a.admin_key, json!({"grace_seconds": 1})).await;
    assert_eq!(rotated.status, 201, "{}", rotated.body);
    let new = rotated.body["key"].as_str().unwrap().to_owned();
    let mut kept = SseReader::new(shell_stream(&b, &new, "echo started; sleep 5; echo done").send().await.unwrap());
    ends_with_error(&mut stream, "grace period has ended").await;
    let events = kept.rest().await;
    assert_eq!(events.last().unwrap().event, "exit", "the new secret's work goes on: {events:?}");
}

async fn a_terminal_lives_its_maximum_lifetime_at_most(db: Db) {
    let app = TestApp::on(db).configure(|c| c.executor.terminal_max_lifetime = Duration::from_secs(1)).await;
    let mut terminal = Term::open(&app, "hello", "", Some(&app.admin_key)).await.unwrap();
    terminal.keys("echo $((6*7))\n").await;
    terminal.until("42").await;
    // Busy the whole time: keystrokes do not renew a lifetime.
    terminal.keys("while true; do echo tick; sleep 0.2; done\n").await;
    terminal.read_to_close().await;
    assert_eq!(terminal.exit_reason.as_deref(), Some("maximum lifetime reached"), "{terminal:?}");
    assert_eq!(terminal.close_reason.as_deref(), Some("maximum lifetime"));
}
