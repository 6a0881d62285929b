//! Followers on a real database: hundreds of idle followers of a running command leave the
//! pool to the writers (another key's `/shell` and a queued command's output), and the caps
//! per key answer 429 in the API's JSON.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::{
    on_both_databases,
    support::{Db, TestApp},
};

on_both_databases!(idle_followers_leave_the_pool_to_the_writers, a_key_past_its_followers_gets_429);

async fn open_events(app: &TestApp, id: &str, key: &str) -> reqwest::Response {
    app.client.get(app.url(&format!("/commands/{id}/events"))).header("X-API-Key", key).send().await.unwrap()
}

async fn idle_followers_leave_the_pool_to_the_writers(db: Db) {
    let app = TestApp::on(db)
        .configure(|c| {
            c.database.max_connections = 3;
            c.server.max_followers_per_key = 1000;
            c.access.rate_limit_per_minute = 100_000;
        })
        .await;
    let queued = app.post("/projects/hello/commands", &app.admin_key, json!({"command": "sleep 30"})).await;
    let id = queued.body["id"].as_str().unwrap().to_owned();
    app.wait_for_command(&id, |c| c["status"] == "running").await;
    let (_, follower_key) = app.create_key(&["commands:read"]).await;
    let mut followers = Vec::new();
    for _ in 0..300 {
        let response = open_events(&app, &id, &follower_key).await;
        assert_eq!(response.status(), 200);
        followers.push(response);
    }
    let (_, other) = app.create_key(&["commands:execute", "projects:read", "commands:read"]).await;
    let started = Instant::now();
    let shell = app.shell("hello", json!({"command": "echo still-here"})).await;
    let projects = app.get("/projects", &other).await;
    let took = started.elapsed();
    println!("{db:?}: /shell and /projects beside 300 followers: {took:?}");
    assert_eq!((shell.status, shell.body["stdout"].as_str()), (200, Some("still-here\n")), "{}", shell.body);
    assert_eq!(projects.status, 200);
    assert!(took < Duration::from_secs(10), "{took:?}");
    let writer = app.post("/projects/hello/commands", &other, json!({"command": "seq 1 20000"})).await;
    let writer_id = writer.body["id"].as_str().unwrap().to_owned();
    let done = app.wait_for_command(&writer_id, |c| c["status"] == "succeeded").await;
    assert_eq!(done["exit_code"], 0, "{done}");
    let output = app.client.get(app.url(&format!("/commands/{writer_id}/output"))).header("X-API-Key", &other);
    let output = output.send().await.unwrap().text().await.unwrap();
    assert_eq!(output.lines().count(), 20000, "the writer's output is whole");
    drop(followers);
}

async fn a_key_past_its_followers_gets_429(db: Db) {
    let app = TestApp::on(db).configure(|c| c.server.max_followers_per_key = 2).await;
    let queued = app.post("/projects/hello/commands", &app.admin_key, json!({"command": "sleep 30"})).await;
    let id = queued.body["id"].as_str().unwrap().to_owned();
    let (_, key) = app.create_key(&["commands:read"]).await;
    let held = [open_events(&app, &id, &key).await, open_events(&app, &id, &key).await];
    assert!(held.iter().all(|r| r.status() == 200));
    let refused = open_events(&app, &id, &key).await;
    assert_eq!(refused.status(), 429);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "QUOTA_EXCEEDED", "{body}");
    assert_eq!(body["error"]["details"], json!({"limit": "followers", "max": 2}), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("RDEV_MAX_FOLLOWERS_PER_KEY"), "{body}");
    // Another key is not held back by this one's followers.
    assert_eq!(open_events(&app, &id, &app.admin_key).await.status(), 200);
    drop(held);
    // A key's own quota wins over the server's.
    let own = app
        .post(
            "/api-keys",
            &app.admin_key,
            json!({"name": "one", "scopes": ["commands:read"], "quotas": {"followers": 1}}),
        )
        .await;
    assert_eq!(own.body["quotas"]["followers"], 1, "{}", own.body);
    let own = own.body["key"].as_str().unwrap().to_owned();
    let _held = open_events(&app, &id, &own).await;
    assert_eq!(open_events(&app, &id, &own).await.status(), 429);
}
