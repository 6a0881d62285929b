//! v2: stdin on every way to run a command, and sessions that keep the folder and the
//! variables from one command to the next (here on the Kubernetes executor of scripts/e2e).

mod common;

use base64::Engine as _;
use serde_json::json;

#[tokio::test]
async fn stdin_reaches_the_command_then_eof() {
    let Some(e2e) = common::target("sessions::stdin") else { return };
    let (_, key) = e2e.create_key("stdin", &["commands:execute", "commands:read"]).await;
    let text = e2e.shell(&key, json!({"command": "wc -c; cat", "stdin": "hello"})).await;
    assert_eq!(text.body["stdout"].as_str().map(str::trim), Some("5"), "{}", text.text);
    let bytes: Vec<u8> = (0..=255).collect();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let binary = e2e.shell(&key, json!({"command": "od -An -v -tx1 | wc -w", "stdin_base64": encoded})).await;
    assert_eq!(binary.body["stdout"].as_str().map(str::trim), Some("256"));
    let both = e2e.shell(&key, json!({"command": "cat", "stdin": "a", "stdin_base64": "YQ=="})).await;
    both.assert_error(400, "VALIDATION_FAILED");
}

#[tokio::test]
async fn a_session_keeps_the_folder_and_the_variables() {
    let Some(e2e) = common::target("sessions::state") else { return };
    let (_, key) = e2e.create_key("sessions", &["commands:execute", "commands:read"]).await;
    let post = |path: String, body: serde_json::Value| {
        let (e2e, key) = (&e2e, key.clone());
        async move { e2e.post(&path, &key, body).await }
    };
    let created = post(format!("/projects/{}/sessions", e2e.project), json!({})).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let first =
        post(format!("/sessions/{id}/shell"), json!({"command": "mkdir -p e2e-sub && cd e2e-sub && export FOO='a b'"}))
            .await;
    assert_eq!((first.status, first.body["session"]["workdir"].as_str()), (200, Some("e2e-sub")), "{}", first.text);
    let next = post(format!("/sessions/{id}/shell"), json!({"command": "pwd; printf %s \"$FOO\"; unset FOO"})).await;
    assert!(next.body["stdout"].as_str().unwrap().ends_with("/e2e-sub\na b"), "{}", next.text);
    assert_eq!(next.body["session"]["env"], json!({}));
    let forged = post(format!("/sessions/{id}/shell"), json!({"command": "printf '/\\0/\\0\\0X=1\\0'"})).await;
    assert_eq!(
        (forged.body["session"]["workdir"].as_str(), forged.body["session"]["env"].clone()),
        (Some("e2e-sub"), json!({}))
    );
    let gone = e2e.delete(&format!("/sessions/{id}"), &key).await;
    assert_eq!(gone.status, 204);
    post(format!("/sessions/{id}/shell"), json!({"command": "true"})).await.assert_error(404, "NOT_FOUND");
}
