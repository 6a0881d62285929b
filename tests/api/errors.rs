//! Bad input: every failure answers in the API's JSON error format, naming what is wrong.

use serde_json::json;

use crate::{
    on_both_databases, on_every_backend,
    support::{Backend, Db, TestApp},
};

on_both_databases!(
    invalid_fields_are_named,
    malformed_and_mistyped_bodies_are_json_errors,
    unknown_routes_and_methods_are_json_errors,
    oversize_body_is_413,
    messages_say_what_to_send,
);

on_every_backend!(unknown_project_is_404_project_not_found);

async fn invalid_fields_are_named(db: Db) {
    let app = TestApp::on(db).await;
    let cases = [
        (json!({"command": "ls", "workdir": "../other"}), "workdir"),
        (json!({"command": "ls", "workdir": "/etc"}), "workdir"),
        (json!({"command": "echo a\u{0}b"}), "command"),
        (json!({"command": "x".repeat(16 * 1024 + 1)}), "command"),
        (json!({"command": ""}), "command"),
        (json!({"command": " \t\n "}), "command"),
        (json!({"command": "ls", "env": {"1BAD": "x"}}), "env"),
        (json!({"command": "ls", "env": {"A-B": "x"}}), "env"),
        (json!({"command": "ls", "timeout_secs": 0}), "timeout_secs"),
        (json!({"command": "ls", "timeout_secs": 3601}), "timeout_secs"),
        (json!({"command": "ls", "timeout_secs": "soon"}), "timeout_secs"),
        (json!({"command": "ls", "comand": "typo"}), "comand"),
        (json!({}), "command"),
    ];
    for (body, field) in cases {
        let reply = app.shell("hello", body.clone()).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.body);
        assert_eq!(reply.error_code(), "VALIDATION_FAILED", "{body}");
        assert!(reply.field_error(field).is_some(), "{body} names {field}: {}", reply.body);
    }
    let many: serde_json::Map<_, _> = (0..65).map(|i| (format!("V{i}"), json!("x"))).collect();
    let reply = app.shell("hello", json!({"command": "ls", "env": many})).await;
    assert_eq!(reply.field_error("env"), Some("at most 64 variables"));
}

async fn malformed_and_mistyped_bodies_are_json_errors(db: Db) {
    let app = TestApp::on(db).await;
    let url = app.url("/projects/hello/shell");
    let malformed = app
        .send(
            app.client
                .post(&url)
                .header("X-API-Key", &app.admin_key)
                .header("content-type", "application/json")
                .body("{\"command\":"),
        )
        .await;
    assert_eq!((malformed.status, malformed.error_code()), (400, "BAD_REQUEST"));
    assert!(malformed.message().contains("malformed JSON"), "{}", malformed.body);
    let untyped =
        app.send(app.client.post(&url).header("X-API-Key", &app.admin_key).body("{\"command\":\"ls\"}")).await;
    assert_eq!((untyped.status, untyped.error_code()), (400, "BAD_REQUEST"));
    let not_object = app.send(app.client.post(&url).header("X-API-Key", &app.admin_key).json(&json!(["ls"]))).await;
    assert_eq!((not_object.status, not_object.error_code()), (400, "VALIDATION_FAILED"));
    let bad_query = app.get("/audit?limit=0", &app.admin_key).await;
    assert_eq!((bad_query.status, bad_query.field_error("limit").is_some()), (400, true), "{}", bad_query.body);
    let bad_cursor = app.get("/audit?cursor=nonsense", &app.admin_key).await;
    assert!(bad_cursor.field_error("cursor").is_some());
    let unknown_param = app.get("/audit?colour=red", &app.admin_key).await;
    assert_eq!(unknown_param.status, 400);
    let bad_id = app.get("/api-keys/not-a-uuid", &app.admin_key).await;
    assert_eq!((bad_id.status, bad_id.error_code()), (400, "VALIDATION_FAILED"));
}

async fn unknown_routes_and_methods_are_json_errors(db: Db) {
    let app = TestApp::on(db).await;
    let missing = app.get("/no/such/route", &app.admin_key).await;
    assert_eq!((missing.status, missing.error_code()), (404, "NOT_FOUND"));
    let wrong_method = app.send(app.client.delete(app.url("/projects")).header("X-API-Key", &app.admin_key)).await;
    assert_eq!((wrong_method.status, wrong_method.error_code()), (405, "METHOD_NOT_ALLOWED"));
    let request_id = "client-chosen-id-123";
    let echoed = app.send(app.client.get(app.url("/no/such/route")).header("x-request-id", request_id)).await;
    assert_eq!(echoed.headers["x-request-id"], request_id);
    assert_eq!(echoed.body["error"]["request_id"], request_id);
}

async fn oversize_body_is_413(db: Db) {
    // The routes that run commands take RDEV_MAX_BODY_BYTES plus twice RDEV_MAX_STDIN_BYTES.
    let app = TestApp::on(db).configure(|config| config.executor.max_stdin_bytes = 1024).await;
    let huge = json!({"command": "x".repeat(300 * 1024)});
    let reply = app.shell("hello", huge).await;
    assert_eq!((reply.status, reply.error_code()), (413, "PAYLOAD_TOO_LARGE"));
    // Each names its route's limit: 256 KiB + 2 × 1 KiB to execute, 256 KiB elsewhere.
    assert_eq!(reply.message(), "request body is larger than the limit of 264192 bytes");
    let key = app.post("/api-keys", &app.admin_key, json!({"name": "x".repeat(300 * 1024), "scopes": ["admin"]})).await;
    assert_eq!((key.status, key.error_code()), (413, "PAYLOAD_TOO_LARGE"));
    assert_eq!(key.message(), "request body is larger than the limit of 262144 bytes");
}

/// The messages a newcomer meets first name the field once, say what would be accepted, and
/// carry nothing of the parser's inner workings (no "line 1 column 30").
async fn messages_say_what_to_send(db: Db) {
    let app = TestApp::on(db).await;
    let unknown = app.shell("hello", json!({"command": "ls", "timeout": 5})).await;
    assert_eq!(unknown.error_code(), "VALIDATION_FAILED");
    let said = unknown.field_error("timeout").unwrap_or_default().to_owned();
    assert!(said.starts_with("unknown field, expected one of `command`"), "{}", unknown.body);
    assert!(said.contains("`timeout_secs`"), "{said}");
    assert_eq!(unknown.message(), format!("invalid request: timeout: {said}"));
    let missing = app.shell("hello", json!({"timeout_secs": 5})).await;
    assert_eq!(missing.message(), "invalid request: command: is required");
    let mistyped = app.shell("hello", json!({"command": "ls", "timeout_secs": "soon"})).await;
    assert!(!mistyped.message().contains("line 1"), "{}", mistyped.body);
    let blank = app.shell("hello", json!({"command": "   "})).await;
    assert_eq!(blank.field_error("command"), Some("must not be empty or only whitespace"));
    let since = app.get("/audit?since=yesterday", &app.admin_key).await;
    assert_eq!((since.status, since.error_code()), (400, "VALIDATION_FAILED"));
    assert!(since.field_error("since").is_some_and(|m| m.contains("RFC 3339")), "{}", since.body);
    let fine = app.get("/audit?since=2026-12-07T09:30:00Z&until=2026-12-08T00:00:00%2B01:00", &app.admin_key).await;
    assert_eq!(fine.status, 200, "{}", fine.body);
    let outcome = app.get("/audit?outcome=sucess", &app.admin_key).await;
    assert!(outcome.field_error("outcome").is_some_and(|m| m.contains("succeeded")), "{}", outcome.body);
    let refusals = app.get("/audit?outcome=rejected", &app.admin_key).await;
    let entries = refusals.body["entries"].as_array().cloned().unwrap_or_default();
    assert!(!entries.is_empty() && entries.iter().all(|e| e["outcome"] == "rejected"), "{}", refusals.body);
}

async fn unknown_project_is_404_project_not_found(backend: Backend) {
    let app = TestApp::on(backend).await;
    for reply in [app.shell("nope", json!({"command": "true"})).await, app.get("/projects/nope", &app.admin_key).await]
    {
        assert_eq!((reply.status, reply.error_code(), reply.message()), (404, "NOT_FOUND", "project not found"));
    }
    // An id that could never be a folder or label (here `../etc`, percent-encoded) is a 400.
    let reply = app.get("/projects/..%2Fetc", &app.admin_key).await;
    assert_eq!((reply.status, reply.error_code()), (400, "VALIDATION_FAILED"));
}
