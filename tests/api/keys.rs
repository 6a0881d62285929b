//! The `/api-keys` endpoints and the first-start bootstrap.

use chrono::{Duration, Utc};
use rdev_api::App;
use serde_json::json;

use crate::{
    on_both_databases,
    support::{Db, TestApp, fresh_database, test_config},
};

on_both_databases!(
    create_list_get_and_revoke,
    creation_is_validated,
    a_key_cannot_grant_scopes_it_lacks,
    first_start_creates_one_admin_key_only,
    bootstrap_secret_is_stored_once_and_works,
);

async fn create_list_get_and_revoke(db: Db) {
    let app = TestApp::on(db).await;
    let expires = (Utc::now() + Duration::days(30)).to_rfc3339();
    let created = app
        .post(
            "/api-keys",
            &app.admin_key,
            json!({"name": "ci", "scopes": ["projects:read", "commands:execute"], "expires_at": expires}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let secret = created.body["key"].as_str().unwrap();
    assert!(secret.starts_with("rdev_") && secret.len() >= 5 + 43);
    assert!(secret.starts_with(created.body["prefix"].as_str().unwrap()));
    assert_eq!(created.body["scopes"], json!(["projects:read", "commands:execute"]));
    let id = created.body["id"].as_str().unwrap();

    let fetched = app.get(&format!("/api-keys/{id}"), &app.admin_key).await;
    assert_eq!(fetched.body["name"], "ci");
    assert!(fetched.body.get("key").is_none(), "the secret is never shown again");
    assert!(fetched.body["expires_at"].is_string());

    let list = app.get("/api-keys?limit=1", &app.admin_key).await;
    assert_eq!(list.body["api_keys"][0]["id"], id, "newest first");
    let next = list.body["next_cursor"].as_str().expect("the bootstrap key is on page two");
    let page_two = app.get(&format!("/api-keys?limit=1&cursor={next}"), &app.admin_key).await;
    assert_eq!(page_two.body["api_keys"][0]["name"], "bootstrap");
    assert!(page_two.body["next_cursor"].is_null());
    assert!(!list.body.to_string().contains(secret));

    let delete = |id: String| {
        app.send(app.client.delete(app.url(&format!("/api-keys/{id}"))).header("X-API-Key", &app.admin_key))
    };
    assert_eq!(delete(id.to_owned()).await.status, 204);
    assert_eq!(delete(id.to_owned()).await.status, 204, "revoking twice is fine");
    assert!(app.get(&format!("/api-keys/{id}"), &app.admin_key).await.body["revoked_at"].is_string());
    assert_eq!(delete(uuid::Uuid::new_v4().to_string()).await.status, 404);
}

async fn creation_is_validated(db: Db) {
    let app = TestApp::on(db).await;
    let cases = [
        (json!({"name": "", "scopes": ["admin"]}), "name"),
        (json!({"name": "x", "scopes": []}), "scopes"),
        (json!({"name": "x", "scopes": ["projects:write"]}), "scopes"),
        (json!({"name": "x", "scopes": ["admin"], "expires_at": "2001-01-01T00:00:00Z"}), "expires_at"),
        (json!({"name": "x", "scopes": ["admin"], "expires_at": "tomorrow"}), "expires_at"),
        (json!({"scopes": ["admin"]}), "name"),
    ];
    for (body, field) in cases {
        let reply = app.post("/api-keys", &app.admin_key, body.clone()).await;
        assert_eq!((reply.status, reply.error_code()), (400, "VALIDATION_FAILED"), "{body}");
        assert!(reply.field_error(field).is_some(), "{body} names {field}: {}", reply.body);
    }
}

async fn a_key_cannot_grant_scopes_it_lacks(db: Db) {
    let app = TestApp::on(db).await;
    let (_, key_admin) = app.create_key(&["keys:admin", "projects:read"]).await;
    let escalate = app.post("/api-keys", &key_admin, json!({"name": "x", "scopes": ["admin"]})).await;
    assert_eq!(escalate.status, 400);
    assert!(escalate.field_error("scopes").unwrap().contains("admin"));
    let fine = app.post("/api-keys", &key_admin, json!({"name": "x", "scopes": ["projects:read"]})).await;
    assert_eq!(fine.status, 201);
}

async fn first_start_creates_one_admin_key_only(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database(db, dir.path()).await;
    let config = test_config(&url, &dir.path().join("projects"));
    let first = App::build(config.clone()).await.unwrap();
    let secret = first.generated_admin_key.clone().expect("an admin key on first start");
    let second = App::build(config).await.unwrap();
    assert!(second.generated_admin_key.is_none(), "not on later starts");

    let addr = second.local_addr().unwrap();
    tokio::spawn(second.run_until_stopped(std::future::pending()));
    let reply = crate::support::http_client()
        .get(format!("http://{addr}/api-keys"))
        .header("X-API-Key", secret.expose())
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = reply.json().await.unwrap();
    let keys = body["api_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!((keys[0]["name"].as_str(), &keys[0]["scopes"]), (Some("admin"), &json!(["admin"])));
}

async fn bootstrap_secret_is_stored_once_and_works(db: Db) {
    let app = TestApp::on(db).await;
    let mut config = test_config(&app.database_url, &app.projects_dir);
    config.access.bootstrap_api_key = Some(app.admin_key.clone().into());
    let again = App::build(config).await.unwrap();
    assert!(again.generated_admin_key.is_none());
    let keys = app.get("/api-keys", &app.admin_key).await;
    assert_eq!(keys.body["api_keys"].as_array().unwrap().len(), 1, "applying it again stores nothing new");
}
