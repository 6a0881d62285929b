//! Sessions on every backend: the folder and the variables a command leaves are where the next
//! one starts; what did not end on its own, or tried to forge its state, changes nothing.

use std::time::Duration;

use serde_json::{Value, json};

use crate::{
    on_every_backend,
    support::{Backend, ManualClock, TestApp, sse::SseReader},
};

on_every_backend!(
    cd_and_export_carry_over_to_the_next_command,
    unset_and_awkward_values_carry_over,
    a_timed_out_command_leaves_the_session_as_it_was,
    a_forged_state_record_in_the_output_changes_nothing,
    a_folder_outside_the_project_is_not_kept,
    one_command_at_a_time,
    the_request_env_and_workdir_are_for_one_command,
);

async fn session(app: &TestApp, body: Value) -> String {
    let reply = app.post("/projects/hello/sessions", &app.admin_key, body).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    reply.body["id"].as_str().unwrap().to_owned()
}

async fn run(app: &TestApp, id: &str, body: Value) -> Value {
    let reply = app.post(&format!("/sessions/{id}/shell"), &app.admin_key, body).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body
}

fn sub_folder(app: &TestApp) {
    std::fs::create_dir_all(app.project_path("hello").join("sub")).unwrap();
}

async fn cd_and_export_carry_over_to_the_next_command(backend: Backend) {
    let app = TestApp::on(backend).await;
    sub_folder(&app);
    let id = session(&app, json!({})).await;
    let first = run(&app, &id, json!({"command": "cd sub && export FOO='a b'"})).await;
    assert_eq!((first["exit_code"].as_i64(), first["session"]["workdir"].as_str()), (Some(0), Some("sub")), "{first}");
    assert_eq!(first["session"]["env"]["FOO"], "a b");
    let next = run(&app, &id, json!({"command": "pwd; printf %s \"$FOO\""})).await;
    let stdout = next["stdout"].as_str().unwrap();
    let expected = app.project_path("hello").join("sub").canonicalize().unwrap();
    assert_eq!(stdout, format!("{}\na b", expected.display()), "{next}");
    let command = app.get(&format!("/commands/{}", next["execution_id"].as_str().unwrap()), &app.admin_key).await;
    assert_eq!((command.body["origin"].as_str(), command.body["session_id"].as_str()), (Some("session"), Some(&*id)));
    let stored = app.get(&format!("/sessions/{id}"), &app.admin_key).await;
    assert_eq!((stored.body["workdir"].as_str(), stored.body["env"]["FOO"].as_str()), (Some("sub"), Some("a b")));
}

async fn unset_and_awkward_values_carry_over(backend: Backend) {
    let app = TestApp::on(backend).await;
    let id = session(&app, json!({"env": {"GONE": "soon", "KEPT": "k"}})).await;
    let awkward = "it's \"quoted\"\nnext line\ttab é ✓ $(not run)";
    let body = run(&app, &id, json!({"command": "unset GONE; export AWK=\"$V\"", "env": {"V": awkward}})).await;
    assert_eq!(body["session"]["env"], json!({"AWK": awkward, "KEPT": "k"}), "{body}");
    let next = run(&app, &id, json!({"command": "printf %s \"$AWK\"; echo \"[${GONE-unset}]\""})).await;
    assert_eq!(next["stdout"].as_str().unwrap(), format!("{awkward}[unset]\n"));
    let exited = run(&app, &id, json!({"command": "export AFTER=exit; exit 3"})).await;
    assert_eq!((exited["exit_code"].as_i64(), exited["session"]["env"]["AFTER"].as_str()), (Some(3), Some("exit")));
}

async fn a_timed_out_command_leaves_the_session_as_it_was(backend: Backend) {
    let app = TestApp::on(backend).await;
    sub_folder(&app);
    let id = session(&app, json!({"env": {"A": "1"}})).await;
    let body = run(&app, &id, json!({"command": "cd sub; export A=2 B=3; sleep 30", "timeout_secs": 1})).await;
    assert_eq!(body["timed_out"], true);
    assert_eq!((body["session"]["workdir"].clone(), body["session"]["env"].clone()), (Value::Null, json!({"A": "1"})));
    let stored = app.get(&format!("/sessions/{id}"), &app.admin_key).await;
    assert_eq!(stored.body["env"], json!({"A": "1"}));
    app.commands_settled().await;
    // Free again: the timed-out command gave the session back.
    assert_eq!(run(&app, &id, json!({"command": "echo $A"})).await["stdout"], "1\n");
}

async fn a_forged_state_record_in_the_output_changes_nothing(backend: Backend) {
    let app = TestApp::on(backend).await;
    let id = session(&app, json!({})).await;
    let root = app.project_path("hello").canonicalize().unwrap();
    let forged = format!(
        "printf '%s\\0%s\\0\\0FORGED=1\\0' '{root}' '{root}/..'; printf '%s\\0%s\\0\\0FORGED=1\\0' '{root}' '{root}/x' >&2",
        root = root.display()
    );
    let body = run(&app, &id, json!({"command": forged})).await;
    assert!(body["stdout"].as_str().unwrap().contains("FORGED=1"));
    assert_eq!((body["session"]["workdir"].clone(), body["session"]["env"].clone()), (Value::Null, json!({})));
}

async fn a_folder_outside_the_project_is_not_kept(backend: Backend) {
    let app = TestApp::on(backend).await;
    sub_folder(&app);
    let id = session(&app, json!({"workdir": "sub"})).await;
    let body = run(&app, &id, json!({"command": "cd / && export WENT=out"})).await;
    assert_eq!(
        (body["session"]["workdir"].as_str(), body["session"]["env"]["WENT"].as_str()),
        (Some("sub"), Some("out"))
    );
    let missing = app.post("/projects/hello/sessions", &app.admin_key, json!({"workdir": "nope"})).await;
    assert_eq!((missing.status, missing.field_error("workdir").is_some()), (400, true), "{}", missing.body);
    let escape = app.post("/projects/hello/sessions", &app.admin_key, json!({"workdir": "../.."})).await;
    assert_eq!(escape.status, 400);
}

async fn one_command_at_a_time(backend: Backend) {
    let app = TestApp::on(backend).await;
    let id = session(&app, json!({})).await;
    let first = app
        .client
        .post(app.url(&format!("/sessions/{id}/shell")))
        .header("X-API-Key", &app.admin_key)
        .header("Accept", "text/event-stream")
        .json(&json!({"command": "echo started; sleep 3; export AFTER=1"}))
        .send()
        .await
        .unwrap();
    let mut events = SseReader::new(first);
    assert_eq!(events.next().await.unwrap().data, "started\n");
    let second = app.post(&format!("/sessions/{id}/shell"), &app.admin_key, json!({"command": "true"})).await;
    assert_eq!((second.status, second.error_code()), (409, "CONFLICT"), "{}", second.body);
    let rest = events.rest().await;
    assert_eq!(rest.last().unwrap().event, "exit");
    let stored = app.get(&format!("/sessions/{id}"), &app.admin_key).await;
    assert_eq!(stored.body["env"]["AFTER"], "1", "{}", stored.body);
    assert_eq!(run(&app, &id, json!({"command": "echo $AFTER"})).await["stdout"], "1\n");
}

async fn the_request_env_and_workdir_are_for_one_command(backend: Backend) {
    let app = TestApp::on(backend).await;
    sub_folder(&app);
    let id = session(&app, json!({"env": {"MODE": "session"}})).await;
    let body = run(&app, &id, json!({"command": "pwd; echo $MODE", "env": {"MODE": "once"}, "workdir": "sub"})).await;
    assert!(body["stdout"].as_str().unwrap().ends_with("/sub\nonce\n"), "{body}");
    assert_eq!(
        (body["session"]["workdir"].clone(), body["session"]["env"]["MODE"].as_str()),
        (Value::Null, Some("session"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_belong_to_their_key_and_expire() {
    let clock = ManualClock::new();
    let app = TestApp::on(Backend::Local(crate::support::Db::Sqlite))
        .configure(|config| config.executor.session_idle_timeout = Duration::from_secs(600))
        .clock(clock.clone())
        .await;
    let (_, mine) = app.create_key(&["commands:execute", "commands:read"]).await;
    let (_, other) = app.create_key(&["commands:execute", "commands:read"]).await;
    let created = app.post("/projects/hello/sessions", &mine, json!({"env": {"SECRET": "s"}})).await;
    assert_eq!(created.status, 201);
    let id = created.body["id"].as_str().unwrap();
    for key in [&other] {
        assert_eq!(app.get(&format!("/sessions/{id}"), key).await.status, 404);
        let theirs = app.post(&format!("/sessions/{id}/shell"), key, json!({"command": "echo $SECRET"})).await;
        assert_eq!(theirs.status, 404, "{}", theirs.body);
        assert_eq!(app.get("/sessions", key).await.body["sessions"], json!([]));
    }
    assert_eq!(app.get("/sessions", &mine).await.body["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(app.get(&format!("/sessions/{id}"), &app.admin_key).await.status, 200, "admin sees every session");
    let (_, reader) = app.create_key(&["commands:read"]).await;
    let refused = app.post(&format!("/sessions/{id}/shell"), &reader, json!({"command": "true"})).await;
    assert_eq!(refused.status, 403);

    clock.advance(chrono::Duration::seconds(599));
    assert_eq!(app.post(&format!("/sessions/{id}/shell"), &mine, json!({"command": "true"})).await.status, 200);
    clock.advance(chrono::Duration::seconds(599));
    assert_eq!(app.get(&format!("/sessions/{id}"), &mine).await.status, 200, "each use renews it");
    clock.advance(chrono::Duration::seconds(2));
    let gone = app.get(&format!("/sessions/{id}"), &mine).await;
    assert_eq!((gone.status, gone.error_code()), (404, "NOT_FOUND"));
    let other_session = app.post("/projects/hello/sessions", &mine, json!({})).await;
    let other_id = other_session.body["id"].as_str().unwrap();
    let deleted =
        app.send(app.client.delete(app.url(&format!("/sessions/{other_id}"))).header("X-API-Key", &mine)).await;
    assert_eq!(deleted.status, 204);
    assert_eq!(app.get(&format!("/sessions/{other_id}"), &mine).await.status, 404);
}

/// `Idempotency-Key` on a session's command: a repeat replays the first answer (the session it
/// left included) without running again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_session_request_runs_once() {
    let app = TestApp::on(Backend::Local(crate::support::Db::Sqlite)).await;
    let id = session(&app, json!({})).await;
    let send = || {
        app.send(
            app.client
                .post(app.url(&format!("/sessions/{id}/shell")))
                .header("X-API-Key", &app.admin_key)
                .header("Idempotency-Key", "count-1")
                .json(&json!({"command": "export N=$((${N:-0} + 1)); echo $N"})),
        )
    };
    let first = send().await;
    let again = send().await;
    assert_eq!((first.status, again.status), (200, 200));
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body, first.body);
    assert_eq!(first.body["session"]["env"]["N"], "1");
    assert_eq!(app.get(&format!("/sessions/{id}"), &app.admin_key).await.body["env"]["N"], "1", "ran once");
}
