//! The audit log: an entry for what ran, and one for every refused attempt to execute.

mod common;

use std::time::Duration;

use serde_json::{Value, json};

/// The newest entries matching `query`, looked through for one whose command is `command`.
async fn find_entry(e2e: &common::E2e, key: &str, query: &str, command: &str) -> Value {
    e2e.eventually(&format!("an audit entry for {command:?} ({query})"), Duration::from_secs(10), || async {
        let reply = e2e.get(&format!("/audit?{query}&limit=500"), key).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.body["entries"].as_array().unwrap().iter().find(|e| e["command"] == command).cloned()
    })
    .await
}

#[tokio::test]
async fn what_ran_is_audited_with_its_outcome() {
    let Some(e2e) = common::target("audit::executions") else { return };
    let (_, auditor) = e2e.create_key("auditor", &["audit:read"]).await;
    let (key_id, key) = e2e.create_key("audited", &["commands:execute"]).await;

    let ok = format!("echo {}", common::marker());
    let ran = e2e.shell(&key, json!({"command": ok})).await;
    assert_eq!(ran.status, 200, "{}", ran.text);
    let entry = find_entry(&e2e, &auditor, &format!("api_key_id={key_id}"), &ok).await;
    assert_eq!((entry["outcome"].as_str(), entry["exit_code"].as_i64()), (Some("succeeded"), Some(0)), "{entry}");
    assert_eq!(entry["id"], ran.body["execution_id"], "{entry}");
    assert_eq!(entry["project_id"], e2e.project.as_str());
    assert_eq!(entry["api_key_id"], key_id.as_str());
    for field in ["at", "request_id"] {
        assert!(entry[field].is_string(), "{field}: {entry}");
    }

    let failing = format!("echo {}; exit 2", common::marker());
    e2e.shell(&key, json!({"command": failing})).await;
    let entry = find_entry(&e2e, &auditor, &format!("project_id={}", e2e.project), &failing).await;
    assert_eq!((entry["outcome"].as_str(), entry["exit_code"].as_i64()), (Some("failed"), Some(2)), "{entry}");

    // A key without audit:read may not read it.
    e2e.get("/audit", &key).await.assert_error(403, "FORBIDDEN");
}

#[tokio::test]
async fn refused_attempts_are_audited_as_rejected() {
    let Some(e2e) = common::target("audit::refusals") else { return };
    let (_, auditor) = e2e.create_key("auditor", &["audit:read"]).await;
    let (reader_id, reader) = e2e.create_key("no-execute", &["projects:read"]).await;
    let path = format!("/projects/{}/shell", e2e.project);

    // Missing scope: 403, recorded with the key.
    let forbidden = format!("echo {}", common::marker());
    e2e.post(&path, &reader, json!({"command": forbidden})).await.assert_error(403, "FORBIDDEN");
    let entry = find_entry(&e2e, &auditor, &format!("api_key_id={reader_id}"), &forbidden).await;
    assert_eq!(entry["outcome"], "rejected", "{entry}");
    assert_eq!(entry["project_id"], e2e.project.as_str());

    // No key: 401, recorded without one.
    let anonymous = format!("echo {}", common::marker());
    let reply = e2e.send(e2e.client.post(e2e.url(&path)).json(&json!({"command": anonymous}))).await;
    reply.assert_error(401, "UNAUTHORIZED");
    let entry = find_entry(&e2e, &auditor, &format!("project_id={}", e2e.project), &anonymous).await;
    assert_eq!((entry["outcome"].as_str(), entry["api_key_id"].is_null()), (Some("rejected"), true), "{entry}");
}
