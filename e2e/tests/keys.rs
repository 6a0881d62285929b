//! API keys: create, list, get, patch, rotate with a grace period, revoke.

mod common;

use std::time::Duration;

use serde_json::json;

#[tokio::test]
async fn a_created_key_is_listed_read_and_changed_but_its_secret_never_shown_again() {
    let Some(e2e) = common::target("keys::create_list_get_patch") else { return };
    let admin = e2e.admin("keys").await;
    let name = common::marker();
    let created = e2e.post("/api-keys", &admin, json!({"name": name, "scopes": ["projects:read"]})).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let secret = created.body["key"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("rdev_"), "secret {secret:?}");
    assert!(secret.starts_with(created.body["prefix"].as_str().unwrap()), "{}", created.text);
    assert_eq!(created.body["scopes"], json!(["projects:read"]));

    // The new key works for its scope.
    assert_eq!(e2e.get("/projects", &secret).await.status, 200);

    let read = e2e.get(&format!("/api-keys/{id}"), &admin).await;
    assert_eq!((read.status, read.body["name"].as_str()), (200, Some(name.as_str())), "{}", read.text);
    assert!(read.body.get("key").is_none() && !read.text.contains(&secret), "the secret is shown again: {}", read.text);

    // Listed (maybe on a later page: the database need not be empty).
    let mut cursor: Option<String> = None;
    let mut found = false;
    for _ in 0..100 {
        let path = match &cursor {
            Some(c) => format!("/api-keys?limit=500&cursor={c}"),
            None => "/api-keys?limit=500".to_owned(),
        };
        let page = e2e.get(&path, &admin).await;
        assert_eq!(page.status, 200, "{}", page.text);
        assert!(!page.text.contains(&secret));
        found |= page.body["api_keys"].as_array().unwrap().iter().any(|k| k["id"] == id.as_str());
        cursor = page.body["next_cursor"].as_str().map(str::to_owned);
        if found || cursor.is_none() {
            break;
        }
    }
    assert!(found, "key {id} is not listed");

    let renamed = format!("{name}-renamed");
    let patched =
        e2e.patch(&format!("/api-keys/{id}"), &admin, json!({"name": renamed, "rate_limit_per_minute": 120})).await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert_eq!(
        (patched.body["name"].as_str(), patched.body["rate_limit_per_minute"].as_u64()),
        (Some(renamed.as_str()), Some(120))
    );
    assert_eq!(patched.body["scopes"], json!(["projects:read"]), "absent fields stay");
    let limited = e2e.get("/projects", &secret).await;
    assert_eq!(limited.header("ratelimit-limit"), Some("120"), "{:?}", limited.headers);

    // An allowlist that excludes us refuses with 403; `[]` clears it. (`null` does not: the server
    // treats `"allowed_ips": null` as absent and keeps the list, unlike `expires_at` and
    // `rate_limit_per_minute`, where `null` clears.)
    let fenced = e2e.patch(&format!("/api-keys/{id}"), &admin, json!({"allowed_ips": ["10.255.0.0/16"]})).await;
    assert_eq!((fenced.status, fenced.body["allowed_ips"].clone()), (200, json!(["10.255.0.0/16"])), "{}", fenced.text);
    e2e.eventually("a key outside its allowlist is refused", Duration::from_secs(40), || async {
        let reply = e2e.get("/projects", &secret).await;
        (reply.status == 403).then(|| reply.assert_error(403, "FORBIDDEN"))
    })
    .await;
    let open = e2e.patch(&format!("/api-keys/{id}"), &admin, json!({"allowed_ips": []})).await;
    assert_eq!((open.status, open.body["allowed_ips"].clone()), (200, json!([])), "{}", open.text);
    e2e.eventually("a cleared allowlist lets the key in again", Duration::from_secs(40), || async {
        (e2e.get("/projects", &secret).await.status == 200).then_some(())
    })
    .await;

    let default_limit = e2e.patch(&format!("/api-keys/{id}"), &admin, json!({"rate_limit_per_minute": null})).await;
    assert_eq!(
        (default_limit.status, default_limit.body["rate_limit_per_minute"].is_null()),
        (200, true),
        "{}",
        default_limit.text
    );

    let unknown = e2e.get(&format!("/api-keys/{}", uuid::Uuid::new_v4()), &admin).await;
    unknown.assert_error(404, "NOT_FOUND");
}

#[tokio::test]
async fn rotation_with_grace_keeps_both_secrets_working_without_grace_only_the_new_one() {
    let Some(e2e) = common::target("keys::rotate") else { return };
    let admin = e2e.admin("rotate").await;

    let (id, old) = e2e.create_key("rotate-grace", &["projects:read"]).await;
    let rotated = e2e.post(&format!("/api-keys/{id}/rotate"), &admin, json!({"grace_seconds": 3600})).await;
    assert_eq!(rotated.status, 201, "{}", rotated.text);
    assert_eq!(rotated.body["id"].as_str(), Some(id.as_str()), "the same key, a new secret");
    let new = rotated.body["key"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(e2e.get("/projects", &new).await.status, 200, "the new secret works");
    assert_eq!(e2e.get("/projects", &old).await.status, 200, "the old secret works during the grace period");

    let (id, old) = e2e.create_key("rotate-now", &["projects:read"]).await;
    assert_eq!(e2e.get("/projects", &old).await.status, 200);
    let rotated = e2e.post(&format!("/api-keys/{id}/rotate"), &admin, json!({})).await;
    assert_eq!(rotated.status, 201, "{}", rotated.text);
    let new = rotated.body["key"].as_str().unwrap().to_owned();
    assert_eq!(e2e.get("/projects", &new).await.status, 200);
    // Other replicas may cache the old secret for CACHE_TTL (30 s by default).
    e2e.eventually("the rotated-out secret is refused", Duration::from_secs(40), || async {
        let reply = e2e.get("/projects", &old).await;
        (reply.status == 401).then(|| reply.assert_error(401, "UNAUTHORIZED"))
    })
    .await;
}

#[tokio::test]
async fn a_revoked_key_is_refused_with_401() {
    let Some(e2e) = common::target("keys::revoke") else { return };
    let admin = e2e.admin("revoke").await;
    let (id, secret) = e2e.create_key("revoked", &["projects:read"]).await;
    assert_eq!(e2e.get("/projects", &secret).await.status, 200);
    let revoked = e2e.delete(&format!("/api-keys/{id}"), &admin).await;
    assert_eq!(revoked.status, 204, "{}", revoked.text);
    e2e.eventually("the revoked key is refused", Duration::from_secs(40), || async {
        let reply = e2e.get("/projects", &secret).await;
        (reply.status == 401).then(|| reply.assert_error(401, "UNAUTHORIZED"))
    })
    .await;
    let read = e2e.get(&format!("/api-keys/{id}"), &admin).await;
    assert!(read.body["revoked_at"].is_string(), "revoked_at is set: {}", read.text);
}
