//! Webhooks end to end: a real receiver on loopback, real deliveries, real retries, a real
//! crash; signatures checked with an independent Standard Webhooks implementation.

use std::time::Duration;

use rdev_api::domain::ApiKeySecret;
use serde_json::{Value, json};

use crate::{
    on_both_databases,
    support::{
        Db, TestApp, fresh_database,
        process::ServerProcess,
        receiver::{Receiver, free_addr},
    },
};

/// A server that may deliver to loopback, retrying after `schedule`.
async fn app_delivering(db: Db, schedule: &str) -> TestApp {
    let schedule: Vec<Duration> = schedule.split(',').map(|wait| humantime::parse_duration(wait).unwrap()).collect();
    TestApp::on(db)
        .configure(|config| {
            config.webhooks.allow_private = true;
            config.webhooks.retry_schedule = schedule;
            config.webhooks.timeout = Duration::from_secs(5);
        })
        .await
}

/// Creates a webhook; returns its id and secret.
async fn subscribe(app: &TestApp, url: &str, events: Option<&[&str]>) -> (String, String) {
    let mut body = json!({"url": url, "description": "test receiver"});
    if let Some(events) = events {
        body["events"] = json!(events);
    }
    let created = app.post("/webhooks", &app.admin_key, body).await;
    assert_eq!(created.status, 201, "{}", created.body);
    (created.body["id"].as_str().unwrap().to_owned(), created.body["secret"].as_str().unwrap().to_owned())
}

/// Polls the webhook's deliveries until `done` holds for the newest one (30 s at most).
async fn wait_for_delivery(app: &TestApp, webhook: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let reply = app.get(&format!("/webhooks/{webhook}/deliveries"), &app.admin_key).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        if let Some(delivery) = reply.body["deliveries"].get(0).filter(|d| done(d)) {
            return delivery.clone();
        }
        assert!(std::time::Instant::now() < deadline, "delivery never got there: {}", reply.body);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn attempt_codes(delivery: &Value) -> Vec<Value> {
    delivery["attempts"].as_array().unwrap().iter().map(|a| a["status_code"].clone()).collect()
}

async fn deliveries_are_signed_and_verify_with_an_independent_implementation(db: Db) {
    let receiver = Receiver::start(&[]).await;
    let app = app_delivering(db, "1s").await;
    let (webhook, secret) = subscribe(&app, &receiver.url(), None).await;
    assert!(secret.starts_with("whsec_"));

    let ran = app.shell("hello", json!({"command": "echo hello"})).await;
    assert_eq!(ran.status, 200);
    let queued = app.post("/projects/hello/commands", &app.admin_key, json!({"command": "echo out; exit 3"})).await;
    assert_eq!(queued.status, 202);

    let received = receiver.wait_for(2).await;
    for request in &received {
        request.verify(&secret);
        assert_eq!(request.header("content-type"), "application/json");
    }
    let bodies: Vec<Value> = received.iter().map(|r| r.json()).collect();
    let now = bodies.iter().find(|b| b["type"] == "command.succeeded").expect("the shell command's event");
    assert_eq!(now["data"]["execution_id"], ran.body["execution_id"]);
    assert_eq!(now["data"]["stdout"], "hello\n");
    assert!(now["timestamp"].as_str().unwrap().ends_with('Z'));
    let failed = bodies.iter().find(|b| b["type"] == "command.failed").expect("the queued command's event");
    assert_eq!(failed["data"]["id"], queued.body["id"]);
    assert_eq!(failed["data"]["exit_code"], 3);
    assert_eq!(failed["data"]["stdout"], "out\n");

    let delivery = wait_for_delivery(&app, &webhook, |d| d["attempt_count"] == 1).await;
    assert_eq!(delivery["status"], "succeeded");
    assert!(delivery.get("next_attempt_at").is_none());
    let id = delivery["id"].as_str().unwrap().replace('-', "");
    assert!(received.iter().any(|r| r.header("webhook-id") == format!("msg_{id}")), "webhook-id is the delivery's");
    assert_eq!(delivery["attempts"][0]["status_code"], 200);
    assert_eq!(delivery["attempts"][0]["response_body"], "thanks");
}

async fn a_receiver_failing_three_times_gets_four_attempts_with_one_webhook_id(db: Db) {
    let receiver = Receiver::start(&[500, 500, 500]).await;
    let app = app_delivering(db, "10ms,10ms,10ms,10ms").await;
    let (webhook, secret) = subscribe(&app, &receiver.url(), Some(&["command.succeeded"])).await;
    assert_eq!(app.shell("hello", json!({"command": "true"})).await.status, 200);

    let received = receiver.wait_for(4).await;
    let delivery = wait_for_delivery(&app, &webhook, |d| d["status"] == "succeeded").await;
    assert_eq!(delivery["attempt_count"], 4);
    assert_eq!(attempt_codes(&delivery), [json!(500), json!(500), json!(500), json!(200)]);
    for (n, attempt) in delivery["attempts"].as_array().unwrap().iter().enumerate() {
        assert_eq!(attempt["attempt"], n + 1);
        assert!(attempt["latency_ms"].is_u64());
    }
    assert_eq!(delivery["attempts"][0]["response_body"], "receiver says no");
    let ids: Vec<&str> = received.iter().map(|r| r.header("webhook-id")).collect();
    assert!(ids.windows(2).all(|pair| pair[0] == pair[1]), "one webhook-id across retries: {ids:?}");
    received.iter().for_each(|r| r.verify(&secret));
    assert_eq!(receiver.received().len(), 4, "nothing more after success");
}

async fn a_receiver_that_is_down_gets_the_delivery_once_it_is_up(db: Db) {
    let addr = free_addr().await;
    let app = app_delivering(db, &vec!["300ms"; 20].join(",")).await;
    let (webhook, _) = subscribe(&app, &format!("http://{addr}/hook"), None).await;
    assert_eq!(app.shell("hello", json!({"command": "true"})).await.status, 200);

    let down = wait_for_delivery(&app, &webhook, |d| d["attempt_count"].as_u64() >= Some(1)).await;
    assert_eq!(down["status"], "pending");
    assert!(down["next_attempt_at"].is_string(), "the next retry is shown: {down}");
    let first = &down["attempts"][0];
    assert!(first.get("status_code").is_none());
    assert!(first["error"].as_str().unwrap().contains("onnect"), "connection error recorded: {first}");

    let receiver = Receiver::start_on(addr, &[]).await;
    receiver.wait_for(1).await;
    let delivered = wait_for_delivery(&app, &webhook, |d| d["status"] == "succeeded").await;
    assert_eq!(delivered["attempts"].as_array().unwrap().last().unwrap()["status_code"], 200);
}

async fn a_delivery_that_runs_out_of_attempts_fails_and_can_be_retried_by_hand(db: Db) {
    let receiver = Receiver::start(&[503, 503]).await;
    let app = app_delivering(db, "10ms").await;
    let (webhook, _) = subscribe(&app, &receiver.url(), None).await;
    assert_eq!(app.shell("hello", json!({"command": "true"})).await.status, 200);

    let failed = wait_for_delivery(&app, &webhook, |d| d["status"] == "failed").await;
    assert_eq!(attempt_codes(&failed), [json!(503), json!(503)]);
    let listed = app.get(&format!("/webhooks/{webhook}/deliveries?status=failed"), &app.admin_key).await;
    assert_eq!(listed.body["deliveries"].as_array().unwrap().len(), 1);

    let id = failed["id"].as_str().unwrap();
    let retried = app.post(&format!("/webhooks/{webhook}/deliveries/{id}/retry"), &app.admin_key, json!({})).await;
    assert_eq!(retried.status, 202, "{}", retried.body);
    let delivered = wait_for_delivery(&app, &webhook, |d| d["status"] == "succeeded").await;
    assert_eq!(attempt_codes(&delivered), [json!(503), json!(503), json!(200)]);
    let received = receiver.wait_for(3).await;
    assert_eq!(received[0].header("webhook-id"), received[2].header("webhook-id"));

    let unknown = uuid::Uuid::new_v4();
    let missing = app.post(&format!("/webhooks/{webhook}/deliveries/{unknown}/retry"), &app.admin_key, json!({})).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.message(), "delivery not found");
}

async fn private_addresses_are_refused_at_creation_and_after_resolution(db: Db) {
    let receiver = Receiver::start(&[]).await;
    let app =
        TestApp::on(db).configure(|config| config.webhooks.retry_schedule = vec![Duration::from_millis(10)]).await;
    for url in [
        format!("http://{}/hook", receiver.addr),
        "http://10.0.0.1/hook".into(),
        "https://[::1]/hook".into(),
        "http://169.254.169.254/latest/meta-data".into(),
        "http://192.168.1.10:8080/".into(),
    ] {
        let refused = app.post("/webhooks", &app.admin_key, json!({"url": url})).await;
        assert_eq!(refused.status, 400, "{url}: {}", refused.body);
        assert_eq!(refused.error_code(), "VALIDATION_FAILED");
        assert!(refused.field_error("url").unwrap().contains("RDEV_WEBHOOK_ALLOW_PRIVATE"), "{}", refused.body);
    }
    // A name is checked on what it resolves to, when delivering.
    let by_name = format!("http://localhost:{}/hook", receiver.addr.port());
    let (webhook, _) = subscribe(&app, &by_name, None).await;
    assert_eq!(app.shell("hello", json!({"command": "true"})).await.status, 200);
    let failed = wait_for_delivery(&app, &webhook, |d| d["status"] == "failed").await;
    for attempt in failed["attempts"].as_array().unwrap() {
        let error = attempt["error"].as_str().unwrap();
        assert!(error.contains("refused") && error.contains("non-public"), "{error}");
    }
    assert!(receiver.received().is_empty(), "nothing reached the private address");
}

async fn webhooks_are_managed_with_validation_and_a_secret_shown_once(db: Db) {
    let app = app_delivering(db, "1s").await;
    let created = app
        .post(
            "/webhooks",
            &app.admin_key,
            json!({"url": "https://example.com/hooks/rdev", "events": ["command.failed"]}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().unwrap();
    assert_eq!(created.body["events"], json!(["command.failed"]));
    assert_eq!(created.body["enabled"], true);

    let fetched = app.get(&format!("/webhooks/{id}"), &app.admin_key).await;
    assert_eq!(fetched.status, 200);
    assert!(fetched.body.get("secret").is_none(), "the secret is shown once");
    let all = app.get("/webhooks", &app.admin_key).await;
    assert_eq!(all.body["webhooks"].as_array().unwrap().len(), 1);
    assert!(!all.body.to_string().contains("whsec_"));

    let changed = app
        .patch(
            &format!("/webhooks/{id}"),
            &app.admin_key,
            json!({"events": ["command.timed_out", "command.cancelled", "command.timed_out"], "enabled": false, "description": null}),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    assert_eq!(changed.body["events"], json!(["command.timed_out", "command.cancelled"]));
    assert_eq!(changed.body["enabled"], false);

    for (body, field) in [
        (json!({"url": "ftp://example.com/x"}), "url"),
        (json!({"url": "not a url"}), "url"),
        (json!({"url": "https://example.com", "events": []}), "events"),
        (json!({"url": "https://example.com", "description": "x".repeat(501)}), "description"),
    ] {
        let refused = app.post("/webhooks", &app.admin_key, body).await;
        assert_eq!(refused.status, 400, "{}", refused.body);
        assert!(refused.field_error(field).is_some(), "{field}: {}", refused.body);
    }
    let unknown_event = app
        .post("/webhooks", &app.admin_key, json!({"url": "https://example.com", "events": ["command.exploded"]}))
        .await;
    assert_eq!(unknown_event.status, 400);
    let (_, reader) = app.create_key(&["projects:read"]).await;
    assert_eq!(app.get("/webhooks", &reader).await.status, 403);

    let deleted =
        app.send(app.client.delete(app.url(&format!("/webhooks/{id}"))).header("X-API-Key", &app.admin_key)).await;
    assert_eq!(deleted.status, 204);
    let gone = app.get(&format!("/webhooks/{id}"), &app.admin_key).await;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.message(), "webhook not found");
}

async fn only_enabled_webhooks_subscribed_to_the_event_receive_it(db: Db) {
    let succeeded = Receiver::start(&[]).await;
    let disabled = Receiver::start(&[]).await;
    let app = app_delivering(db, "1s").await;
    subscribe(&app, &succeeded.url(), Some(&["command.succeeded"])).await;
    let (off, _) = subscribe(&app, &disabled.url(), None).await;
    app.patch(&format!("/webhooks/{off}"), &app.admin_key, json!({"enabled": false})).await;

    assert_eq!(app.shell("hello", json!({"command": "exit 1"})).await.status, 200);
    assert_eq!(app.shell("hello", json!({"command": "true"})).await.status, 200);
    let received = succeeded.wait_for(1).await;
    assert_eq!(received[0].json()["type"], "command.succeeded");
    assert_eq!(received[0].json()["data"]["exit_code"], 0);
    // The failure was never for this subscriber; the disabled webhook got nothing at all.
    let later = app.shell("hello", json!({"command": "echo last"})).await;
    assert_eq!(later.status, 200);
    succeeded.wait_for(2).await;
    assert_eq!(succeeded.received().len(), 2);
    assert!(disabled.received().is_empty());
}

async fn a_disabled_webhook_holds_its_pending_deliveries_until_enabled(db: Db) {
    let addr = free_addr().await;
    let app = app_delivering(db, &vec!["100ms"; 20].join(",")).await;
    let (webhook, _) = subscribe(&app, &format!("http://{addr}/hook"), None).await;
    assert_eq!(app.shell("hello", json!({"command": "true"})).await.status, 200);
    wait_for_delivery(&app, &webhook, |d| d["attempt_count"].as_u64() >= Some(1)).await;

    let disabled = app.patch(&format!("/webhooks/{webhook}"), &app.admin_key, json!({"enabled": false})).await;
    assert_eq!(disabled.status, 200);
    // Proving that nothing is sent needs spans of time: one for an attempt claimed just before
    // the change to fail (at once: nothing listens), then several retry periods.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = wait_for_delivery(&app, &webhook, |_| true).await;
    let receiver = Receiver::start_on(addr, &[]).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(receiver.received().is_empty(), "a disabled webhook is not delivered to");
    let still = wait_for_delivery(&app, &webhook, |_| true).await;
    assert_eq!(still["status"], "pending");
    assert_eq!(still["attempt_count"], held["attempt_count"], "no attempts while disabled");

    app.patch(&format!("/webhooks/{webhook}"), &app.admin_key, json!({"enabled": true})).await;
    receiver.wait_for(1).await;
    wait_for_delivery(&app, &webhook, |d| d["status"] == "succeeded").await;
}

/// What the hourly upkeep runs with `RDEV_WEBHOOK_RETENTION`: finished deliveries older than the
/// cut-off go (with their attempts), pending ones stay whatever their age.
async fn finished_deliveries_are_purged_after_the_retention(db: Db) {
    let receiver = Receiver::start(&[]).await;
    let down = free_addr().await;
    let app = app_delivering(db, "1h").await;
    let (delivered, _) = subscribe(&app, &receiver.url(), None).await;
    let (pending, _) = subscribe(&app, &format!("http://{down}/hook"), None).await;
    assert_eq!(app.shell("hello", json!({"command": "true"})).await.status, 200);
    wait_for_delivery(&app, &delivered, |d| d["status"] == "succeeded").await;
    wait_for_delivery(&app, &pending, |d| d["attempt_count"] == 1).await;

    let (_, deliveries) = app.database.webhooks();
    let now = chrono::Utc::now();
    assert_eq!(deliveries.purge(now - chrono::Duration::days(1)).await.unwrap(), 0, "nothing that old");
    assert_eq!(deliveries.purge(now + chrono::Duration::days(1)).await.unwrap(), 1, "the finished one");
    let gone = app.get(&format!("/webhooks/{delivered}/deliveries"), &app.admin_key).await;
    assert_eq!(gone.body["deliveries"], json!([]));
    let kept = app.get(&format!("/webhooks/{pending}/deliveries"), &app.admin_key).await;
    assert_eq!(kept.body["deliveries"][0]["status"], "pending", "pending work is never purged");
}

on_both_databases!(
    finished_deliveries_are_purged_after_the_retention,
    a_disabled_webhook_holds_its_pending_deliveries_until_enabled,
    deliveries_are_signed_and_verify_with_an_independent_implementation,
    a_receiver_failing_three_times_gets_four_attempts_with_one_webhook_id,
    a_receiver_that_is_down_gets_the_delivery_once_it_is_up,
    a_delivery_that_runs_out_of_attempts_fails_and_can_be_retried_by_hand,
    private_addresses_are_refused_at_creation_and_after_resolution,
    webhooks_are_managed_with_validation_and_a_secret_shown_once,
    only_enabled_webhooks_subscribed_to_the_event_receive_it,
);

/// `kill -9` after a command finished and before its delivery went out: the event is in the
/// outbox with the command's final state, so the restarted service delivers it, once. The first
/// process sends nothing (`RDEV_WEBHOOK_WORKERS=0`), which pins "before delivery" down without
/// racing the dispatcher.
async fn a_crash_between_finish_and_delivery_delivers_once_after_restart(db: Db) {
    let receiver = Receiver::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let database_url = fresh_database(db, dir.path()).await;
    let key = ApiKeySecret::generate().expose().to_owned();
    let env = |workers: &'static str| {
        vec![
            ("RDEV_BOOTSTRAP_API_KEY", key.clone()),
            ("DATABASE_URL", database_url.clone()),
            ("RDEV_WEBHOOK_ALLOW_PRIVATE", "true".to_owned()),
            ("RDEV_WEBHOOK_WORKERS", workers.to_owned()),
        ]
    };
    let start = |env: Vec<(&'static str, String)>| {
        let dir = dir.path().to_owned();
        async move {
            let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            ServerProcess::start(&dir, &pairs).await
        }
    };

    let mut first = start(env("0")).await;
    let created = first.post_json("/webhooks", &key, &json!({"url": receiver.url()})).await;
    let webhook = created["id"].as_str().unwrap().to_owned();
    let secret = created["secret"].as_str().unwrap().to_owned();
    let ran = first.post_json("/projects/hello/shell", &key, &json!({"command": "echo before the crash"})).await;
    assert_eq!(ran["exit_code"], 0);
    first.child.start_kill().unwrap(); // SIGKILL: no shutdown, no flush
    first.child.wait().await.unwrap();
    assert!(receiver.received().is_empty(), "nothing was delivered before the crash");

    let second = start(env("4")).await;
    let received = receiver.wait_for(1).await;
    received[0].verify(&secret);
    assert_eq!(received[0].json()["data"]["execution_id"], ran["execution_id"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let delivery = loop {
        let listed = second.get_json(&format!("/webhooks/{webhook}/deliveries"), &key).await;
        if listed["deliveries"][0]["status"] == "succeeded" {
            break listed["deliveries"].clone();
        }
        assert!(std::time::Instant::now() < deadline, "never recorded: {listed}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(delivery.as_array().unwrap().len(), 1);
    assert_eq!(delivery[0]["attempt_count"], 1);
    assert_eq!(receiver.received().len(), 1, "delivered once");
}

on_both_databases!(a_crash_between_finish_and_delivery_delivers_once_after_restart);
