//! The persisted command queue: enqueue, priority order, cancellation, and replicas sharing it.

use serde_json::{Value, json};

use crate::{
    on_both_databases,
    support::{Db, TestApp, survivors_of},
};

on_both_databases!(
    a_queued_command_runs_and_reports_its_result,
    commands_run_in_priority_order_fifo_within_a_priority,
    cancelling_a_queued_command_is_immediate_and_final,
    cancelling_a_running_command_kills_it_on_whichever_replica_runs_it,
    bad_enqueues_are_refused_and_audited,
    expired_leases_requeue_unstarted_or_retryable_commands_and_fail_the_rest,
);

fn is_final(command: &Value) -> bool {
    !matches!(command["status"].as_str(), Some("queued" | "running"))
}

async fn a_queued_command_runs_and_reports_its_result(db: Db) {
    let app = TestApp::on(db).await;
    let reply = app
        .post("/projects/hello/commands", &app.admin_key, json!({"command": "echo queued; exit 3", "priority": 7}))
        .await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    let id = reply.body["id"].as_str().unwrap().to_owned();
    assert_eq!(reply.headers["location"], format!("/commands/{id}"));
    assert_eq!((reply.body["status"].as_str(), reply.body["priority"].as_u64()), (Some("queued"), Some(7)));

    let done = app.wait_for_command(&id, is_final).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["exit_code"], 3);
    assert_eq!(done["stdout"], "queued\n");
    assert_eq!(done["attempts"], 1);
    assert!(done["started_at"].is_string() && done["finished_at"].is_string());

    let listed = app.get("/commands?project_id=hello&status=failed", &app.admin_key).await;
    assert_eq!(listed.body["commands"][0]["id"], id.as_str());
    assert_eq!(app.get("/commands?status=running", &app.admin_key).await.body["commands"], json!([]));
    let audit = app.get("/audit?project_id=hello", &app.admin_key).await;
    let entry = &audit.body["entries"][0];
    assert_eq!(
        (entry["id"].as_str(), entry["outcome"].as_str(), entry["exit_code"].as_i64()),
        (Some(id.as_str()), Some("failed"), Some(3))
    );
}

async fn commands_run_in_priority_order_fifo_within_a_priority(db: Db) {
    // No workers here: the queue fills while nobody drains it.
    let paused = TestApp::on(db).configure(|config| config.queue.workers = 0).await;
    let mut expected = Vec::new();
    for (n, priority) in [(1, 1), (2, 5), (3, 9), (4, 5), (5, 0), (6, 9), (7, 5)] {
        let reply = paused
            .post(
                "/projects/hello/commands",
                &paused.admin_key,
                json!({"command": format!("echo {n} >> order.txt"), "priority": priority}),
            )
            .await;
        assert_eq!(reply.status, 202);
        expected.push((priority, n));
    }
    // Highest priority first, then arrival order.
    expected.sort_by_key(|(priority, n)| (std::cmp::Reverse(*priority), *n));
    let worker = paused.replica(|config| config.queue.workers = 1).await;
    let listed = paused.get("/commands?limit=500", &paused.admin_key).await;
    for command in listed.body["commands"].as_array().unwrap() {
        worker.wait_for_command(command["id"].as_str().unwrap(), is_final).await;
    }
    let order = std::fs::read_to_string(paused.project_path("hello").join("order.txt")).unwrap();
    let ran: Vec<u32> = order.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(ran, expected.iter().map(|(_, n)| *n).collect::<Vec<_>>());
}

async fn cancelling_a_queued_command_is_immediate_and_final(db: Db) {
    let app = TestApp::on(db).configure(|config| config.queue.workers = 0).await;
    let queued = app.post("/projects/hello/commands", &app.admin_key, json!({"command": "touch ran"})).await;
    let id = queued.body["id"].as_str().unwrap();
    let cancelled = app.post(&format!("/commands/{id}/cancel"), &app.admin_key, json!({})).await;
    assert_eq!((cancelled.status, cancelled.body["status"].as_str()), (200, Some("cancelled")), "{}", cancelled.body);
    let again = app.post(&format!("/commands/{id}/cancel"), &app.admin_key, json!({})).await;
    assert_eq!((again.status, again.error_code()), (409, "CONFLICT"));
    let missing = app.post(&format!("/commands/{}/cancel", uuid::Uuid::new_v4()), &app.admin_key, json!({})).await;
    assert_eq!(missing.status, 404);
    // A worker that starts later does not run it.
    let worker = app.replica(|config| config.queue.workers = 1).await;
    let after = worker.post("/projects/hello/commands", &worker.admin_key, json!({"command": "true"})).await;
    worker.wait_for_command(after.body["id"].as_str().unwrap(), is_final).await;
    assert!(!app.project_path("hello").join("ran").exists());
}

async fn cancelling_a_running_command_kills_it_on_whichever_replica_runs_it(db: Db) {
    let front = TestApp::on(db).configure(|config| config.queue.workers = 0).await;
    let runner = front.replica(|config| config.queue.workers = 1).await;
    for (label, via) in [("other replica", &front), ("same replica", &runner)] {
        let marker = format!("300.{}", uuid::Uuid::new_v4().as_u128() % 1_000_000);
        let body = json!({"command": format!("sleep {marker} & sleep {marker}")});
        let queued = via.post("/projects/hello/commands", &via.admin_key, body).await;
        let id = queued.body["id"].as_str().unwrap().to_owned();
        via.wait_for_command(&id, |c| c["status"] == "running").await;
        let cancelled = via.post(&format!("/commands/{id}/cancel"), &via.admin_key, json!({})).await;
        assert_eq!(
            (cancelled.status, cancelled.body["status"].as_str()),
            (200, Some("cancelled")),
            "{label}: {}",
            cancelled.body
        );
        assert_eq!(survivors_of(&marker).await, Vec::<u32>::new(), "{label}: the process group is gone");
        let audit = via.get("/audit?project_id=hello&limit=1", &via.admin_key).await;
        assert_eq!(audit.body["entries"][0]["id"], id.as_str());
        assert_eq!(audit.body["entries"][0]["outcome"], "cancelled", "{label}: a cancel is not a refusal");
    }
}

async fn bad_enqueues_are_refused_and_audited(db: Db) {
    let app = TestApp::on(db).await;
    for (body, field) in [
        (json!({"command": "x", "priority": 10}), "priority"),
        (json!({"command": "x", "max_attempts": 0}), "max_attempts"),
        (json!({"command": "", "priority": 3}), "command"),
        (json!({"command": "x", "workdir": "../up"}), "workdir"),
    ] {
        let reply = app.post("/projects/hello/commands", &app.admin_key, body.clone()).await;
        assert_eq!((reply.status, reply.field_error(field).is_some()), (400, true), "{body}: {}", reply.body);
    }
    let missing = app.post("/projects/nope/commands", &app.admin_key, json!({"command": "x"})).await;
    assert_eq!((missing.status, missing.message()), (404, "project not found"));
    let (_, reader) = app.create_key(&["commands:read"]).await;
    assert_eq!(app.post("/projects/hello/commands", &reader, json!({"command": "x"})).await.status, 403);
    assert_eq!(app.get("/commands", &reader).await.status, 200);
    let audit = app.get("/audit?project_id=nope", &app.admin_key).await;
    assert_eq!(audit.body["entries"][0]["outcome"], "rejected");
    assert_eq!(audit.body["entries"][0]["reason"], "NOT_FOUND: project not found", "why it was refused");
    assert_eq!(app.get("/commands", &app.admin_key).await.body["commands"], json!([]), "nothing was queued");
}

/// The queue adapter itself, with leases that expire on a clock the test controls.
async fn expired_leases_requeue_unstarted_or_retryable_commands_and_fail_the_rest(db: Db) {
    use rdev_api::domain::{Caller, Command, CommandStatus, EnqueueRequest, ProjectId};
    let app = TestApp::on(db).configure(|config| config.queue.workers = 0).await;
    let queue = app.database.command_queue();
    let now = chrono::Utc::now();
    let new = |command: &str, max_attempts: u32| {
        let request = EnqueueRequest {
            command: command.into(),
            timeout_secs: None,
            workdir: None,
            env: None,
            priority: None,
            max_attempts: Some(max_attempts),
            max_output_bytes: None,
            stdin: None,
            stdin_base64: None,
        };
        let caller = Caller { api_key_id: None, request_id: "r".into(), client_ip: None };
        Command::new(request, ProjectId::parse("hello").unwrap(), caller, crate::support::command_defaults(5), now)
            .unwrap()
    };
    let (unstarted, retryable, once) = (new("a", 1), new("b", 2), new("c", 1));
    for command in [&unstarted, &retryable, &once] {
        queue.enqueue(command).await.unwrap();
    }
    let lease = now + chrono::Duration::seconds(2);
    let mut claimed = Vec::new();
    for _ in 0..3 {
        claimed.push(queue.claim("dead-worker", lease, chrono::Utc::now(), &[]).await.unwrap().unwrap().id);
    }
    assert!(
        queue.claim("dead-worker", lease, chrono::Utc::now(), &[]).await.unwrap().is_none(),
        "each command is claimed once"
    );
    queue.start(retryable.id, "dead-worker", now).await.unwrap();
    queue.start(once.id, "dead-worker", now).await.unwrap();

    let audit = |recovered: &rdev_api::ports::Recovered| crate::contracts::entry_of(recovered.command());
    assert!(queue.recover_expired(now, &audit).await.unwrap().is_empty(), "leases still hold");
    let recovered = queue.recover_expired(now + chrono::Duration::seconds(3), &audit).await.unwrap();
    let lost: Vec<_> = recovered
        .iter()
        .filter_map(|r| match r {
            rdev_api::ports::Recovered::Lost(c) => Some(c.id),
            rdev_api::ports::Recovered::Retried(_) => None,
        })
        .collect();
    assert_eq!(lost, [once.id]);
    let status = |id| {
        let queue = queue.clone();
        async move { queue.get(id).await.unwrap().unwrap() }
    };
    assert_eq!(status(unstarted.id).await.status, CommandStatus::Queued, "never started: simply back");
    let again = status(retryable.id).await;
    assert_eq!((again.status, again.attempts), (CommandStatus::Queued, 1), "started once, may start once more");
    let failed = status(once.id).await;
    assert_eq!((failed.status, failed.error.as_deref()), (CommandStatus::Failed, Some("worker lost")));
    assert!(queue.renew(once.id, "dead-worker", lease).await.unwrap().is_none(), "the dead worker's claim is gone");
}
