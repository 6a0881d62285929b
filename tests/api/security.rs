//! The holes an attacker found, each closed at its mechanism: scopes that hold through every
//! key operation, a rotated bootstrap secret that stays dead, request ids and refused attempts
//! that cannot fill the disk, webhooks that cannot reach reserved addresses, and allowlists in
//! IPv4-mapped form.

use serde_json::json;

use crate::{
    on_both_databases,
    support::{Db, ManualClock, TestApp},
};

on_both_databases!(
    a_keys_admin_key_cannot_take_over_a_stronger_key,
    a_rotated_bootstrap_secret_stays_dead_after_a_restart,
    refused_attempts_are_audited_within_a_budget_and_shortened,
    refused_file_changes_are_audited_within_the_same_budget,
    audit_rows_past_their_retention_are_purged,
    an_ipv4_mapped_allowlist_entry_matches_an_ipv4_client,
    reserved_addresses_are_refused_as_webhook_targets,
    answers_are_never_cached_nor_sniffed,
);

async fn a_keys_admin_key_cannot_take_over_a_stronger_key(db: Db) {
    let app = TestApp::on(db).await;
    let (_, manager) = app.create_key(&["keys:admin"]).await;
    let (target, target_secret) = app.create_key(&["admin"]).await;
    let (reader, _) = app.create_key(&["keys:admin", "projects:read"]).await;
    let path = format!("/api-keys/{target}");

    let rotated = app.post(&format!("{path}/rotate"), &manager, json!({})).await;
    assert_eq!((rotated.status, rotated.error_code()), (403, "FORBIDDEN"), "{}", rotated.body);
    assert!(rotated.body.get("key").is_none());
    for change in [json!({"allowed_ips": null}), json!({"expires_at": null}), json!({"scopes": ["keys:admin"]})] {
        let patched = app.patch(&path, &manager, change.clone()).await;
        assert_eq!(patched.status, 403, "{change}: {}", patched.body);
    }
    let revoked = app.send(app.client.delete(app.url(&path)).header("X-API-Key", &manager)).await;
    assert_eq!(revoked.status, 403, "{}", revoked.body);
    let other = app.post(&format!("/api-keys/{reader}/rotate"), &manager, json!({})).await;
    assert_eq!(other.status, 403, "projects:read is a scope the manager lacks too");

    assert_eq!(app.get("/projects", &target_secret).await.status, 200, "the admin key still works, unchanged");
    let (own, _) = app.create_key(&["keys:admin"]).await;
    assert_eq!(
        app.post(&format!("/api-keys/{own}/rotate"), &manager, json!({})).await.status,
        201,
        "an equal key: fine"
    );
    let granted = app.patch(&format!("/api-keys/{own}"), &manager, json!({"scopes": ["admin"]})).await;
    assert_eq!(granted.status, 400, "nor can it grant what it lacks: {}", granted.body);
}

async fn a_rotated_bootstrap_secret_stays_dead_after_a_restart(db: Db) {
    let app = TestApp::on(db).await;
    let id = app.admin_key_id().await;
    let rotated = app.post(&format!("/api-keys/{id}/rotate"), &app.admin_key, json!({"grace_seconds": 0})).await;
    assert_eq!(rotated.status, 201);
    assert_eq!(app.get("/projects", &app.admin_key).await.status, 401);
    // A restart with the same RDEV_BOOTSTRAP_API_KEY (a replica applies it at start).
    let restarted = app.replica(|_| {}).await;
    assert_eq!(restarted.get("/projects", &app.admin_key).await.status, 401, "not stored again");
    assert_eq!(app.get("/projects", &app.admin_key).await.status, 401);
    let new = rotated.body["key"].as_str().unwrap();
    assert_eq!(restarted.get("/projects", new).await.status, 200);
}

async fn refused_attempts_are_audited_within_a_budget_and_shortened(db: Db) {
    // The budget is per calendar minute: a stopped clock keeps all 60 attempts in one.
    let app = TestApp::on(db).clock(ManualClock::new()).await;
    let long_id = "r".repeat(60_000);
    let fine_id = "f".repeat(128);
    let command = "x".repeat(16_000);
    for n in 0..60 {
        let request_id = if n == 0 { fine_id.as_str() } else { long_id.as_str() };
        let reply = app
            .send(
                app.client
                    .post(app.url("/projects/hello/shell"))
                    .header("X-Request-Id", request_id)
                    .json(&json!({"command": command})),
            )
            .await;
        assert_eq!(reply.status, 401);
        let echoed = reply.headers["x-request-id"].to_str().unwrap();
        if n == 0 {
            assert_eq!(echoed, fine_id, "a fitting id is echoed");
        } else {
            assert!(echoed.len() <= 128 && echoed != long_id, "an oversized id is replaced");
            assert_eq!(reply.body["error"]["request_id"], echoed);
        }
    }
    let audit = app.get("/audit?limit=500", &app.admin_key).await;
    let rows = audit.body["entries"].as_array().unwrap();
    assert_eq!(rows.len(), 30, "one client's refusals are audited 30 times a minute at most");
    for row in rows {
        assert!(row["command"].as_str().unwrap().len() <= 1024 + 3, "shortened: {}", row["command"]);
        assert!(row["request_id"].as_str().unwrap().len() <= 128);
    }
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let suppressed = metrics.lines().find(|l| l.starts_with("audit_rejections_suppressed_total")).unwrap();
    let count: f64 = suppressed.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 30.0, "the rest are counted: {suppressed}");
}

async fn refused_file_changes_are_audited_within_the_same_budget(db: Db) {
    let app = TestApp::on(db).await;
    let (key_id, key) = app.create_key(&["files:write"]).await;
    for _ in 0..60 {
        let put =
            app.client.put(app.url("/projects/hello/files/content?path=../outside.txt")).header("X-API-Key", &key);
        let reply = app.send(put.body("x")).await;
        assert_eq!(reply.status, 400, "{}", reply.body);
    }
    let audit = app.get("/audit?limit=500", &app.admin_key).await;
    let rows: Vec<_> =
        audit.body["entries"].as_array().unwrap().iter().filter(|row| row["api_key_id"] == key_id.as_str()).collect();
    assert_eq!(rows.len(), 30, "one key's refused file changes are audited 30 times a minute at most");
    assert!(rows.iter().all(|row| row["outcome"] == "rejected"), "{rows:?}");
}

async fn audit_rows_past_their_retention_are_purged(db: Db) {
    let app = TestApp::on(db).await;
    assert_eq!(app.shell("hello", json!({"command": "true"})).await.status, 200);
    let log = app.database.audit_log();
    let now = chrono::Utc::now();
    assert_eq!(log.purge(now - chrono::Duration::days(1)).await.unwrap(), 0, "nothing is that old");
    assert_eq!(log.purge(now + chrono::Duration::seconds(5)).await.unwrap(), 1);
    assert_eq!(app.get("/audit", &app.admin_key).await.body["entries"], json!([]));
}

async fn an_ipv4_mapped_allowlist_entry_matches_an_ipv4_client(db: Db) {
    let app = TestApp::on(db).await;
    let created = app
        .post(
            "/api-keys",
            &app.admin_key,
            json!({"name": "mapped", "scopes": ["projects:read"], "allowed_ips": ["::ffff:127.0.0.1"]}),
        )
        .await;
    assert_eq!(created.body["allowed_ips"], json!(["127.0.0.1/32"]), "{}", created.body);
    assert_eq!(app.get("/projects", created.body["key"].as_str().unwrap()).await.status, 200);
}

async fn reserved_addresses_are_refused_as_webhook_targets(db: Db) {
    let app = TestApp::on(db).await;
    for host in [
        "198.18.0.1",
        "192.0.0.1",
        "240.0.0.1",
        "[64:ff9b::a9fe:a9fe]",
        "[2002:a9fe:a9fe::1]",
        "[::a9fe:a9fe]",
        "[::ffff:a9fe:a9fe]",
    ] {
        let url = format!("http://{host}/hook");
        let refused = app.post("/webhooks", &app.admin_key, json!({"url": url})).await;
        assert_eq!(refused.status, 400, "{url}: {}", refused.body);
    }
    let public = app.post("/webhooks", &app.admin_key, json!({"url": "http://[64:ff9b::808:808]/hook"})).await;
    assert_eq!(public.status, 201, "NAT64 of a public address is public: {}", public.body);
}

/// A key's secret, a webhook's secret, a listing, an error: no cache may keep any of them, and
/// no browser may read one as another type.
async fn answers_are_never_cached_nor_sniffed(db: Db) {
    let app = TestApp::on(db).await;
    let created =
        app.post("/api-keys", &app.admin_key, serde_json::json!({"name": "n", "scopes": ["projects:read"]})).await;
    let rotated = app
        .post(
            &format!("/api-keys/{}/rotate", created.body["id"].as_str().unwrap()),
            &app.admin_key,
            serde_json::json!({}),
        )
        .await;
    let listed = app.get("/projects", &app.admin_key).await;
    let refused = app.get("/projects", "rdev_wrong").await;
    for (what, reply) in
        [("created key", &created), ("rotated key", &rotated), ("listing", &listed), ("refusal", &refused)]
    {
        assert_eq!(reply.headers["cache-control"], "no-store", "{what}");
        assert_eq!(reply.headers["x-content-type-options"], "nosniff", "{what}");
    }
}
