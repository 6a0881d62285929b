//! Authentication (401) and authorisation (403) on every protected route.

use chrono::{Duration, Utc};
use serde_json::json;

use crate::{
    on_both_databases,
    support::{Db, TestApp},
};

on_both_databases!(
    missing_malformed_and_unknown_keys_are_401,
    expired_and_revoked_keys_are_401_saying_which,
    a_key_without_the_scope_is_403,
    the_ip_allowlist_is_enforced,
);

async fn missing_malformed_and_unknown_keys_are_401(db: Db) {
    let app = TestApp::on(db).await;
    let none = app.send(app.client.get(app.url("/projects"))).await;
    assert_eq!((none.status, none.error_code(), none.message()), (401, "UNAUTHORIZED", "missing X-API-Key header"));
    let malformed = app.get("/projects", "not-a-key").await;
    assert_eq!((malformed.status, malformed.message()), (401, "malformed API key"));
    let unknown = app.get("/projects", rdev_api::domain::ApiKeySecret::generate().expose()).await;
    assert_eq!((unknown.status, unknown.message()), (401, "unknown API key"));
    let shell =
        app.send(app.client.post(app.url("/projects/hello/shell")).json(&json!({"command": "touch pwned"}))).await;
    assert_eq!(shell.status, 401);
    assert!(!app.project_path("hello").join("pwned").exists());
}

async fn expired_and_revoked_keys_are_401_saying_which(db: Db) {
    let app = TestApp::on(db).await;
    let expired = app.insert_key(|key| key.expires_at = Some(Utc::now() - Duration::seconds(1))).await;
    let reply = app.get("/projects", &expired).await;
    assert_eq!((reply.status, reply.message()), (401, "API key has expired"));

    let (id, secret) = app.create_key(&["projects:read"]).await;
    assert_eq!(app.get("/projects", &secret).await.status, 200);
    let revoked =
        app.send(app.client.delete(app.url(&format!("/api-keys/{id}"))).header("X-API-Key", &app.admin_key)).await;
    assert_eq!(revoked.status, 204);
    let reply = app.get("/projects", &secret).await;
    assert_eq!((reply.status, reply.message()), (401, "API key has been revoked"));
}

async fn a_key_without_the_scope_is_403(db: Db) {
    let app = TestApp::on(db).await;
    let (_, reader) = app.create_key(&["projects:read"]).await;
    assert_eq!(app.get("/projects", &reader).await.status, 200);
    let shell = app.post("/projects/hello/shell", &reader, json!({"command": "touch pwned"})).await;
    assert_eq!((shell.status, shell.error_code()), (403, "FORBIDDEN"));
    assert!(shell.message().contains("commands:execute"), "{}", shell.body);
    assert!(!app.project_path("hello").join("pwned").exists());
    for path in ["/api-keys", "/audit"] {
        assert_eq!(app.get(path, &reader).await.status, 403, "{path}");
    }
    let (_, runner) = app.create_key(&["commands:execute"]).await;
    assert_eq!(app.post("/projects/hello/shell", &runner, json!({"command": "true"})).await.status, 200);
    assert_eq!(app.get("/projects", &runner).await.status, 403);
}

async fn the_ip_allowlist_is_enforced(db: Db) {
    let app = TestApp::on(db).await;
    let elsewhere = app
        .post(
            "/api-keys",
            &app.admin_key,
            json!({"name": "far", "scopes": ["projects:read"], "allowed_ips": ["10.0.0.0/8", "2001:db8::/32"]}),
        )
        .await;
    assert_eq!(elsewhere.status, 201, "{}", elsewhere.body);
    assert_eq!(elsewhere.body["allowed_ips"], json!(["10.0.0.0/8", "2001:db8::/32"]));
    let reply = app.get("/projects", elsewhere.body["key"].as_str().unwrap()).await;
    assert_eq!((reply.status, reply.error_code()), (403, "FORBIDDEN"));
    let here = app
        .post(
            "/api-keys",
            &app.admin_key,
            json!({"name": "near", "scopes": ["projects:read"], "allowed_ips": ["127.0.0.1"]}),
        )
        .await;
    assert_eq!(app.get("/projects", here.body["key"].as_str().unwrap()).await.status, 200);
    let bad = app
        .post(
            "/api-keys",
            &app.admin_key,
            json!({"name": "bad", "scopes": ["projects:read"], "allowed_ips": ["300.1.1.1"]}),
        )
        .await;
    assert!(bad.field_error("allowed_ips").is_some(), "{}", bad.body);
}
