//! The command queue: enqueue (202 + Location), follow to a final status, priority, cancel.

mod common;

use std::time::Duration;

use common::{E2e, is_final};
use serde_json::{Value, json};

/// How long a queued command may wait for a worker: other tests may be holding the workers.
const QUEUE_WAIT: Duration = Duration::from_secs(120);

async fn enqueue(e2e: &E2e, key: &str, body: Value) -> String {
    let reply = e2e.post(&format!("/projects/{}/commands", e2e.project), key, body.clone()).await;
    assert_eq!(reply.status, 202, "enqueueing {body}: {}", reply.text);
    let id = reply.body["id"].as_str().unwrap().to_owned();
    assert_eq!(reply.header("location"), Some(format!("/commands/{id}").as_str()), "{:?}", reply.headers);
    id
}

/// Cancels `id`: 200 when it stopped (or never ran), 202 when a worker was told; 409 if it had finished.
async fn cancel(e2e: &E2e, key: &str, id: &str) -> common::Reply {
    e2e.post(&format!("/commands/{id}/cancel"), key, json!({})).await
}

/// Fills every queue worker (of every replica) with long commands until one more stays queued,
/// so what is enqueued next waits. Returns the blockers, the queued one last.
async fn occupy_every_worker(e2e: &E2e, key: &str) -> Vec<String> {
    let mut blockers = Vec::new();
    for _ in 0..300 {
        let id = enqueue(e2e, key, json!({"command": "sleep 90", "priority": 9, "timeout_secs": 120})).await;
        blockers.push(id.clone());
        // An idle worker takes it at once on this replica, within its idle poll (5 s) on others.
        let deadline = std::time::Instant::now() + Duration::from_secs(6);
        loop {
            let status = e2e.get(&format!("/commands/{id}"), key).await.body["status"].clone();
            if status != "queued" {
                break;
            }
            if std::time::Instant::now() > deadline {
                return blockers;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    panic!("could not occupy every queue worker with 300 commands");
}

async fn release(e2e: &E2e, key: &str, blockers: &[String]) {
    for id in blockers {
        let reply = cancel(e2e, key, id).await;
        assert!(matches!(reply.status, 200 | 202 | 409), "cancelling blocker {id}: {}", reply.text);
    }
}

#[tokio::test]
async fn a_queued_command_runs_and_reports_its_result() {
    let Some(e2e) = common::target("queue::run") else { return };
    let (_, key) = e2e.create_key("queue", &["commands:execute", "commands:read"]).await;
    let marker = common::marker();
    let reply = e2e
        .post(
            &format!("/projects/{}/commands", e2e.project),
            &key,
            json!({"command": format!("echo {marker}; exit 3"), "priority": 7}),
        )
        .await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    let id = reply.body["id"].as_str().unwrap().to_owned();
    assert_eq!(reply.header("location"), Some(format!("/commands/{id}").as_str()));
    assert_eq!(reply.body["priority"], 7);
    assert!(matches!(reply.body["status"].as_str(), Some("queued" | "running")), "{}", reply.text);

    let done = e2e.wait_for_command(&key, &id, QUEUE_WAIT, is_final).await;
    assert_eq!((done["status"].as_str(), done["exit_code"].as_i64()), (Some("failed"), Some(3)), "{done}");
    assert_eq!(done["stdout"], format!("{marker}\n"));
    assert!(done["started_at"].is_string() && done["finished_at"].is_string(), "{done}");

    let ok = enqueue(&e2e, &key, json!({"command": "true"})).await;
    let done = e2e.wait_for_command(&key, &ok, QUEUE_WAIT, is_final).await;
    assert_eq!(
        (done["status"].as_str(), done["exit_code"].as_i64(), done["priority"].as_u64()),
        (Some("succeeded"), Some(0), Some(5)),
        "default priority 5: {done}"
    );

    let listed = e2e.get(&format!("/commands?project_id={}&status=failed&limit=500", e2e.project), &key).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert!(listed.body["commands"].as_array().unwrap().iter().all(|c| c["status"] == "failed"), "{}", listed.text);
}

#[tokio::test]
async fn bad_enqueues_are_refused() {
    let Some(e2e) = common::target("queue::refused") else { return };
    let (_, key) = e2e.create_key("queue-refused", &["commands:execute"]).await;
    for (body, field) in [
        (json!({"command": "x", "priority": 10}), "priority"),
        (json!({"command": "x", "max_attempts": 0}), "max_attempts"),
        (json!({"command": "", "priority": 3}), "command"),
    ] {
        let reply = e2e.post(&format!("/projects/{}/commands", e2e.project), &key, body.clone()).await;
        reply.assert_error(400, "VALIDATION_FAILED");
        assert!(reply.body["error"]["details"]["fields"][field].is_string(), "{body}: {}", reply.text);
    }
    let unknown = e2e.get(&format!("/commands/{}", uuid::Uuid::new_v4()), &e2e.admin_key).await;
    unknown.assert_error(404, "NOT_FOUND");
    let unknown = cancel(&e2e, &key, &uuid::Uuid::new_v4().to_string()).await;
    unknown.assert_error(404, "NOT_FOUND");
}

/// One test, because both hold every queue worker for a while.
#[tokio::test]
async fn a_queued_command_cancels_at_once_a_finished_one_is_409_and_priority_orders_the_queue() {
    let Some(e2e) = common::target("queue::cancel_and_priority") else { return };
    let (_, key) = e2e.create_key("queue-cancel", &["commands:execute", "commands:read"]).await;

    // Finished → 409.
    let finished = enqueue(&e2e, &key, json!({"command": "true"})).await;
    e2e.wait_for_command(&key, &finished, QUEUE_WAIT, is_final).await;
    cancel(&e2e, &key, &finished).await.assert_error(409, "CONFLICT");

    let blockers = occupy_every_worker(&e2e, &key).await;

    // Queued → cancelled, at once and for good.
    let file = common::marker();
    let queued = enqueue(&e2e, &key, json!({"command": format!("echo never >> {file}")})).await;
    let cancelled = cancel(&e2e, &key, &queued).await;
    assert_eq!((cancelled.status, cancelled.body["status"].as_str()), (200, Some("cancelled")), "{}", cancelled.text);
    assert!(cancelled.body["started_at"].is_null(), "it never started: {}", cancelled.text);
    cancel(&e2e, &key, &queued).await.assert_error(409, "CONFLICT");

    // Priority: with one worker free, 8 runs before 5 before 1, whatever the arrival order.
    let mut order = Vec::new();
    for (name, priority) in [("low", 1), ("high", 8), ("mid", 5)] {
        order.push(
            enqueue(&e2e, &key, json!({"command": format!("echo {name} >> {file}"), "priority": priority})).await,
        );
    }
    let (running, waiting) = blockers.split_at(blockers.len() - 1);
    release(&e2e, &key, waiting).await;
    release(&e2e, &key, &running[..1]).await;
    for id in &order {
        let done = e2e.wait_for_command(&key, id, QUEUE_WAIT, is_final).await;
        assert_eq!(done["status"], "succeeded", "{done}");
    }
    release(&e2e, &key, &running[1..]).await;
    let ran = e2e.shell(&e2e.admin_key, json!({"command": format!("cat {file}; rm -f {file}")})).await;
    assert_eq!(ran.body["stdout"], "high\nmid\nlow\n", "{}", ran.text);
}
