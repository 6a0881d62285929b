//! Client IPs behind proxies, rate limits and the audit of refused attempts, on one replica.
//! (`replicas.rs` checks what must hold across several.)

use serde_json::json;

use crate::{
    on_both_databases,
    support::{Db, TestApp},
};

on_both_databases!(
    forwarded_for_is_believed_only_from_trusted_proxies,
    rate_limit_counts_down_then_answers_429,
    refused_attempts_to_execute_are_audited,
    purging_forgets_only_counts_outside_every_window,
);

async fn forwarded_for_is_believed_only_from_trusted_proxies(db: Db) {
    let behind_proxy =
        TestApp::on(db).configure(|config| config.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()]).await;
    let direct = TestApp::on(db).await;
    for app in [&behind_proxy, &direct] {
        let created = app
            .post(
                "/api-keys",
                &app.admin_key,
                json!({"name": "office", "scopes": ["admin"], "allowed_ips": ["203.0.113.0/24"]}),
            )
            .await;
        let key = created.body["key"].as_str().unwrap().to_owned();
        let from = |xff: &'static str| {
            app.client.get(app.url("/projects")).header("X-API-Key", &key).header("X-Forwarded-For", xff)
        };
        let proxied = app.send(from("203.0.113.5")).await;
        // Prepending an allowed address does not help: the proxy's own hop is on the right.
        let spoofed = app.send(from("203.0.113.5, 198.51.100.1")).await;
        if std::ptr::eq(app, &behind_proxy) {
            assert_eq!(proxied.status, 200, "the trusted proxy says the client is 203.0.113.5");
            assert_eq!(spoofed.status, 403);
            let run = app
                .send(
                    app.client
                        .post(app.url("/projects/hello/shell"))
                        .header("X-API-Key", &key)
                        .header("X-Forwarded-For", "203.0.113.77")
                        .json(&json!({"command": "true"})),
                )
                .await;
            assert_eq!(run.status, 200);
            let audit = app.get("/audit?project_id=hello", &app.admin_key).await;
            assert_eq!(audit.body["entries"][0]["client_ip"], "203.0.113.77");
        } else {
            assert_eq!(
                (proxied.status, proxied.error_code()),
                (403, "FORBIDDEN"),
                "a header from an untrusted peer is ignored"
            );
            assert_eq!(spoofed.status, 403);
        }
    }
}

async fn rate_limit_counts_down_then_answers_429(db: Db) {
    let app = TestApp::on(db).await;
    let created = app
        .post(
            "/api-keys",
            &app.admin_key,
            json!({"name": "slow", "scopes": ["projects:read"], "rate_limit_per_minute": 3}),
        )
        .await;
    let key = created.body["key"].as_str().unwrap();
    for remaining in ["2", "1", "0"] {
        let reply = app.get("/projects", key).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.headers["ratelimit-limit"], "3");
        assert_eq!(reply.headers["ratelimit-remaining"], remaining);
        let reset: u32 = reply.headers["ratelimit-reset"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&reset));
    }
    let limited = app.get("/projects", key).await;
    assert_eq!((limited.status, limited.error_code()), (429, "RATE_LIMITED"));
    let retry_after: u32 = limited.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(limited.headers["ratelimit-remaining"], "0");
    // Other keys have windows of their own; errors of authenticated requests carry the headers.
    let other = app.get("/projects/nope", &app.admin_key).await;
    assert_eq!(other.status, 404);
    assert!(other.headers.contains_key("ratelimit-remaining"));
}

async fn refused_attempts_to_execute_are_audited(db: Db) {
    let app = TestApp::on(db).await;
    let (reader_id, reader) = app.create_key(&["projects:read"]).await;
    let limited = app
        .post(
            "/api-keys",
            &app.admin_key,
            json!({"name": "one", "scopes": ["commands:execute"], "rate_limit_per_minute": 1}),
        )
        .await;
    let (limited_id, limited_key) = (limited.body["id"].as_str().unwrap(), limited.body["key"].as_str().unwrap());
    let shell = |key: Option<&str>, body: serde_json::Value| {
        let mut request = app.client.post(app.url("/projects/hello/shell")).json(&body);
        if let Some(key) = key {
            request = request.header("X-API-Key", key);
        }
        app.send(request)
    };
    assert_eq!(shell(None, json!({"command": "echo no key"})).await.status, 401);
    assert_eq!(shell(Some(&reader), json!({"command": "echo no scope"})).await.status, 403);
    assert_eq!(shell(Some(limited_key), json!({"command": "echo first"})).await.status, 200);
    assert_eq!(shell(Some(limited_key), json!({"command": "echo second"})).await.status, 429);
    assert_eq!(shell(Some(&app.admin_key), json!({"command": "echo bad", "workdir": "../x"})).await.status, 400);
    assert_eq!(app.shell("nope", json!({"command": "echo where"})).await.status, 404);

    let audit = app.get("/audit", &app.admin_key).await;
    let rows: Vec<(String, String, serde_json::Value)> = audit.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["outcome"].as_str().unwrap().to_owned(),
                e["command"].as_str().unwrap_or("").to_owned(),
                e["api_key_id"].clone(),
            )
        })
        .collect();
    let expected = [
        ("rejected", "echo where", json!(app.admin_key_id().await)),
        ("rejected", "echo bad", json!(app.admin_key_id().await)),
        ("rejected", "echo second", json!(limited_id)),
        ("succeeded", "echo first", json!(limited_id)),
        ("rejected", "echo no scope", json!(reader_id)),
        ("rejected", "echo no key", serde_json::Value::Null),
    ];
    let expected: Vec<_> = expected.into_iter().map(|(o, c, k)| (o.to_owned(), c.to_owned(), k)).collect();
    assert_eq!(rows, expected);

    let by_key = app.get(&format!("/audit?api_key_id={limited_id}&limit=1"), &app.admin_key).await;
    assert_eq!(by_key.body["entries"][0]["command"], "echo second");
    let cursor = by_key.body["next_cursor"].as_str().unwrap();
    let next = app.get(&format!("/audit?api_key_id={limited_id}&limit=1&cursor={cursor}"), &app.admin_key).await;
    assert_eq!(next.body["entries"][0]["command"], "echo first");
    assert!(next.body["next_cursor"].is_null());
    let until = app.get("/audit?until=2000-01-01T00:00:00Z", &app.admin_key).await;
    assert_eq!(until.body["entries"].as_array().unwrap().len(), 0);
}

async fn purging_forgets_only_counts_outside_every_window(db: Db) {
    let app = TestApp::on(db).await;
    let limiter = app.database.rate_limiter();
    let key = uuid::Uuid::new_v4();
    let now = chrono::Utc::now();
    limiter.hit(key, 2, 60, now - chrono::Duration::seconds(120)).await.unwrap();
    limiter.hit(key, 2, 60, now - chrono::Duration::seconds(10)).await.unwrap();
    assert_eq!(limiter.purge(now - chrono::Duration::seconds(60)).await.unwrap(), 1);
    let decision = limiter.hit(key, 2, 60, now).await.unwrap();
    assert!(decision.allowed && decision.remaining == 0, "the recent count is still there: {decision:?}");
    assert!(!limiter.hit(key, 2, 60, now).await.unwrap().allowed);
}
