//! The API key lifecycle beyond create/revoke: PATCH, rotation with a grace period, usage times.

use chrono::{Duration, Utc};
use serde_json::json;

use crate::{
    on_both_databases,
    support::{Db, ManualClock, TestApp},
};

on_both_databases!(
    patch_changes_each_field_and_null_clears,
    patch_refuses_bad_values_and_revoked_keys,
    rotate_keeps_the_old_secret_for_the_grace_period_only,
    rotate_without_grace_stops_the_old_secret_at_once,
    last_used_at_is_kept_without_a_write_per_request,
);

async fn patch_changes_each_field_and_null_clears(db: Db) {
    let app = TestApp::on(db).await;
    let (id, secret) = app.create_key(&["projects:read"]).await;
    let expires = (Utc::now() + Duration::days(1)).to_rfc3339();
    let changes = json!({
        "name": "renamed", "scopes": ["projects:read", "commands:execute"], "allowed_ips": ["127.0.0.1/32"],
        "rate_limit_per_minute": 42, "expires_at": expires,
    });
    let patched = app.patch(&format!("/api-keys/{id}"), &app.admin_key, changes).await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(patched.body["name"], "renamed");
    assert_eq!(patched.body["scopes"], json!(["projects:read", "commands:execute"]));
    assert_eq!(patched.body["allowed_ips"], json!(["127.0.0.1/32"]));
    assert_eq!(patched.body["rate_limit_per_minute"], 42);
    assert!(patched.body["expires_at"].is_string());

    // The change applies to the very next request, on this replica.
    let run = app.post("/projects/hello/shell", &secret, json!({"command": "true"})).await;
    assert_eq!(run.status, 200, "the new scope works at once");
    assert_eq!(run.headers["ratelimit-limit"], "42");

    let cleared = app
        .patch(
            &format!("/api-keys/{id}"),
            &app.admin_key,
            json!({"expires_at": null, "rate_limit_per_minute": null, "allowed_ips": null}),
        )
        .await;
    assert!(cleared.body["expires_at"].is_null() && cleared.body["rate_limit_per_minute"].is_null());
    assert_eq!(cleared.body["allowed_ips"], json!([]), "null clears the allowlist too");
    assert_eq!(cleared.body["name"], "renamed", "fields not sent stay");
    let fetched = app.get(&format!("/api-keys/{id}"), &app.admin_key).await;
    assert_eq!(fetched.body["scopes"], json!(["projects:read", "commands:execute"]));
    assert!(fetched.body["expires_at"].is_null());
}

async fn patch_refuses_bad_values_and_revoked_keys(db: Db) {
    let app = TestApp::on(db).await;
    let (id, _) = app.create_key(&["projects:read"]).await;
    let path = format!("/api-keys/{id}");
    for (body, field) in [
        (json!({"rate_limit_per_minute": 0}), "rate_limit_per_minute"),
        (json!({"scopes": []}), "scopes"),
        (json!({"expires_at": "2000-01-01T00:00:00Z"}), "expires_at"),
        (json!({"allowed_ips": ["not-an-ip"]}), "allowed_ips"),
        (json!({"secret": "x"}), "secret"),
    ] {
        let reply = app.patch(&path, &app.admin_key, body.clone()).await;
        assert_eq!((reply.status, reply.field_error(field).is_some()), (400, true), "{body}: {}", reply.body);
    }
    let missing = app.patch(&format!("/api-keys/{}", uuid::Uuid::new_v4()), &app.admin_key, json!({"name": "x"})).await;
    assert_eq!(missing.status, 404);
    app.send(app.client.delete(app.url(&path)).header("X-API-Key", &app.admin_key)).await;
    let revoked = app.patch(&path, &app.admin_key, json!({"name": "back from the dead"})).await;
    assert_eq!((revoked.status, revoked.error_code()), (409, "CONFLICT"));
}

async fn rotate_keeps_the_old_secret_for_the_grace_period_only(db: Db) {
    let clock = ManualClock::new();
    let app = TestApp::on(db).clock(clock.clone()).await;
    let (id, old) = app.create_key(&["projects:read"]).await;
    let rotated = app.post(&format!("/api-keys/{id}/rotate"), &app.admin_key, json!({"grace_seconds": 60})).await;
    assert_eq!(rotated.status, 201, "{}", rotated.body);
    let new = rotated.body["key"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(rotated.body["id"], id.as_str(), "same key, new secret");
    assert!(new.starts_with(rotated.body["prefix"].as_str().unwrap()));

    assert_eq!(app.get("/projects", &old).await.status, 200, "old secret inside the grace period");
    assert_eq!(app.get("/projects", &new).await.status, 200);
    clock.advance(Duration::seconds(59));
    assert_eq!(app.get("/projects", &old).await.status, 200);
    clock.advance(Duration::seconds(2));
    let expired = app.get("/projects", &old).await;
    assert_eq!(
        (expired.status, expired.message()),
        (401, "API key secret was replaced by a rotation and its grace period has ended")
    );
    assert_eq!(app.get("/projects", &new).await.status, 200);

    let too_long = app.post(&format!("/api-keys/{id}/rotate"), &app.admin_key, json!({"grace_seconds": 700_000})).await;
    assert!(too_long.field_error("grace_seconds").is_some());
}

async fn rotate_without_grace_stops_the_old_secret_at_once(db: Db) {
    let app = TestApp::on(db).await;
    let (id, old) = app.create_key(&["projects:read"]).await;
    assert_eq!(app.get("/projects", &old).await.status, 200, "cached on this replica");
    let oversize = app
        .send(
            app.client
                .post(app.url(&format!("/api-keys/{id}/rotate")))
                .header("X-API-Key", &app.admin_key)
                .header("content-type", "application/json")
                .body(format!("{{\"grace_seconds\": 1{}}}", " ".repeat(300 * 1024))),
        )
        .await;
    assert_eq!((oversize.status, oversize.error_code()), (413, "PAYLOAD_TOO_LARGE"));
    // No body at all: grace 0.
    let rotated =
        app.send(app.client.post(app.url(&format!("/api-keys/{id}/rotate"))).header("X-API-Key", &app.admin_key)).await;
    assert_eq!(rotated.status, 201, "{}", rotated.body);
    assert_eq!(app.get("/projects", &old).await.status, 401, "the cache was cleared by the rotation");
    assert_eq!(app.get("/projects", rotated.body["key"].as_str().unwrap()).await.status, 200);
}

async fn last_used_at_is_kept_without_a_write_per_request(db: Db) {
    let app = TestApp::on(db).await;
    let (id, secret) = app.create_key(&["projects:read"]).await;
    assert!(app.get(&format!("/api-keys/{id}"), &app.admin_key).await.body["last_used_at"].is_null());
    app.get("/projects", &secret).await;
    let seen = app.get(&format!("/api-keys/{id}"), &app.admin_key).await;
    assert!(seen.body["last_used_at"].is_string(), "{}", seen.body);
}
