//! `POST /projects/{id}/shell`: run and wait.

mod common;

use serde_json::json;

#[tokio::test]
async fn a_command_runs_and_answers_its_output() {
    let Some(e2e) = common::target("shell::success") else { return };
    let (_, key) = e2e.create_key("shell", &["commands:execute"]).await;
    let marker = common::marker();
    let reply = e2e.shell(&key, json!({"command": format!("echo {marker}")})).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let execution = &reply.body;
    assert_eq!(execution["exit_code"], 0, "{}", reply.text);
    assert_eq!(execution["stdout"], format!("{marker}\n"));
    assert_eq!(execution["stderr"], "");
    assert_eq!(execution["timed_out"], false);
    assert_eq!(execution["project_id"], e2e.project.as_str());
    assert_eq!(execution["command"], format!("echo {marker}"));
    for field in ["execution_id", "started_at", "finished_at"] {
        assert!(execution[field].is_string(), "{field}: {}", reply.text);
    }
    assert!(execution["duration_ms"].is_u64(), "{}", reply.text);
    assert_eq!(
        (execution["stdout_truncated"].as_bool(), execution["stderr_truncated"].as_bool()),
        (Some(false), Some(false))
    );
    assert!(reply.header("ratelimit-remaining").is_some(), "rate limit headers: {:?}", reply.headers);
    assert!(reply.header("x-request-id").is_some());
}

#[tokio::test]
async fn a_non_zero_exit_is_still_200_with_stderr() {
    let Some(e2e) = common::target("shell::non_zero_exit") else { return };
    let (_, key) = e2e.create_key("shell-exit", &["commands:execute"]).await;
    let reply = e2e.shell(&key, json!({"command": "echo out; echo oops >&2; exit 7"})).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        (reply.body["exit_code"].as_i64(), reply.body["stdout"].as_str(), reply.body["stderr"].as_str()),
        (Some(7), Some("out\n"), Some("oops\n")),
        "{}",
        reply.text
    );
    assert_eq!(reply.body["timed_out"], false);
}

#[tokio::test]
async fn env_and_workdir_reach_the_command_and_bad_ones_are_refused() {
    let Some(e2e) = common::target("shell::env_workdir") else { return };
    let (_, key) = e2e.create_key("shell-env", &["commands:execute"]).await;
    let dir = common::marker();
    let made = e2e.shell(&key, json!({"command": format!("mkdir -p {dir}")})).await;
    assert_eq!((made.status, made.body["exit_code"].as_i64()), (200, Some(0)), "{}", made.text);
    let reply = e2e
        .shell(&key, json!({"command": "echo \"$E2E_VALUE\"; basename \"$PWD\"", "workdir": dir, "env": {"E2E_VALUE": "from-env"}}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["stdout"], format!("from-env\n{dir}\n"), "{}", reply.text);
    e2e.shell(&key, json!({"command": format!("rmdir {dir}")})).await;

    let escape = e2e.shell(&key, json!({"command": "ls", "workdir": "../.."})).await;
    escape.assert_error(400, "VALIDATION_FAILED");
    assert!(escape.body["error"]["details"]["fields"]["workdir"].is_string(), "{}", escape.text);
    let bad_env = e2e.shell(&key, json!({"command": "ls", "env": {"1BAD": "x"}})).await;
    bad_env.assert_error(400, "VALIDATION_FAILED");
    let empty = e2e.shell(&key, json!({"command": ""})).await;
    empty.assert_error(400, "VALIDATION_FAILED");
    let long = e2e.shell(&key, json!({"command": "true", "timeout_secs": 0})).await;
    long.assert_error(400, "VALIDATION_FAILED");
}

#[tokio::test]
async fn a_command_out_of_time_is_killed_and_says_timed_out() {
    let Some(e2e) = common::target("shell::timeout") else { return };
    let (_, key) = e2e.create_key("shell-timeout", &["commands:execute"]).await;
    let started = std::time::Instant::now();
    let reply = e2e.shell(&key, json!({"command": "echo before; sleep 30; echo after", "timeout_secs": 1})).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["timed_out"], true, "{}", reply.text);
    assert_eq!(reply.body["stdout"], "before\n", "{}", reply.text);
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "took {:?}", started.elapsed());
}
