//! The queue is shared: while another key's command waits, no key takes more than half of a
//! replica's workers; with one key, priority order is what it was.

use serde_json::json;

use crate::{
    on_both_databases,
    support::{Db, TestApp},
};

on_both_databases!(
    another_key_s_command_starts_as_soon_as_one_of_the_first_key_s_ends,
    across_replicas_a_waiting_key_gets_a_worker_at_once,
    with_one_key_priority_order_is_unchanged
);

async fn queue(app: &TestApp, key: &str, command: &str, priority: u8) -> String {
    let body = json!({ "command": command, "priority": priority });
    let reply = app.post("/projects/hello/commands", key, body).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    reply.body["id"].as_str().unwrap().to_owned()
}

fn time(command: &serde_json::Value, field: &str) -> chrono::DateTime<chrono::Utc> {
    command[field].as_str().unwrap_or_else(|| panic!("no {field} in {command}")).parse().unwrap()
}

async fn another_key_s_command_starts_as_soon_as_one_of_the_first_key_s_ends(db: Db) {
    let app = TestApp::on(db).configure(|c| c.queue.workers = 2).await;
    let scopes = ["commands:execute", "commands:read"];
    let ((_, a), (_, b)) = (app.create_key(&scopes).await, app.create_key(&scopes).await);
    let mut mine = Vec::new();
    for i in 0..8 {
        mine.push(queue(&app, &a, &format!("sleep 2; echo a{i}"), 9).await);
    }
    // A holds both workers, as nobody else waits.
    for id in &mine[..2] {
        app.wait_for_command(id, |c| c["status"] == "running").await;
    }
    let theirs = queue(&app, &b, "echo b", 0).await;
    let done = app.wait_for_command(&theirs, |c| c["status"] == "succeeded").await;
    let started = time(&done, "started_at");
    let mut a_commands = Vec::new();
    for id in &mine {
        a_commands.push(app.get(&format!("/commands/{id}"), &a).await.body);
    }
    let first_end = a_commands.iter().filter_map(|c| c["finished_at"].as_str()).map(|t| t.parse().unwrap()).min();
    let first_end: chrono::DateTime<chrono::Utc> = first_end.expect("one of A's commands ended before B's started");
    assert!(started >= first_end, "B started at {started}, before any of A's ended ({first_end})");
    // B took the first worker to come free: only A's first two had started before it.
    let before_b =
        a_commands.iter().filter(|c| c["started_at"].as_str().is_some_and(|_| time(c, "started_at") < started));
    assert_eq!(before_b.count(), 2, "B waited behind more of A's commands than the two running: {a_commands:?}");
    for id in &mine {
        app.post(&format!("/commands/{id}/cancel"), &a, json!({})).await;
    }
}

async fn across_replicas_a_waiting_key_gets_a_worker_at_once(db: Db) {
    // Everything is queued before any worker starts, as if A had queued long before B.
    let app = TestApp::on(db).configure(|c| c.queue.workers = 0).await;
    let scopes = ["commands:execute", "commands:read"];
    let ((_, a), (_, b)) = (app.create_key(&scopes).await, app.create_key(&scopes).await);
    let mut mine = Vec::new();
    for i in 0..8 {
        mine.push(queue(&app, &a, &format!("sleep 30; echo a{i}"), 9).await);
    }
    let theirs = queue(&app, &b, "echo b", 0).await;
    let (first, second) = (app.replica(|c| c.queue.workers = 2).await, app.replica(|c| c.queue.workers = 2).await);
    // Each replica keeps a worker for B while it waits: B runs long before any of A's ends.
    let done = first.wait_for_command(&theirs, |c| c["status"] == "succeeded").await;
    assert_eq!(done["status"], "succeeded");
    let started = time(&done, "started_at");
    let mut before_b = 0;
    for id in &mine {
        let command = second.get(&format!("/commands/{id}"), &a).await.body;
        assert!(command["finished_at"].is_null(), "one of A's ended before B ran: {command}");
        before_b += usize::from(command["started_at"].as_str().is_some_and(|_| time(&command, "started_at") < started));
    }
    assert!(before_b <= 3, "A took all four workers of the two replicas while B waited: {before_b}");
    for id in &mine {
        first.post(&format!("/commands/{id}/cancel"), &a, json!({})).await;
    }
}

async fn with_one_key_priority_order_is_unchanged(db: Db) {
    let app = TestApp::on(db).configure(|c| c.queue.workers = 0).await;
    let (_, key) = app.create_key(&["commands:execute", "commands:read"]).await;
    let mut ids = Vec::new();
    for priority in [1, 5, 9, 3, 7] {
        ids.push((priority, queue(&app, &key, "true", priority).await));
    }
    let workers = app.replica(|c| c.queue.workers = 1).await;
    let mut started = Vec::new();
    for (priority, id) in &ids {
        let done = workers.wait_for_command(id, |c| c["status"] == "succeeded").await;
        started.push((time(&done, "started_at"), *priority));
    }
    started.sort();
    let order: Vec<u8> = started.into_iter().map(|(_, priority)| priority).collect();
    assert_eq!(order, [9, 7, 5, 3, 1]);
}
