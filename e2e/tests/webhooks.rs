//! Webhooks, as a customer's endpoint sees them: a receiver in this process gets signed
//! deliveries of the commands this test runs, verifies them with the `standardwebhooks` crate,
//! and is retried after a failure with the same `webhook-id`.
//!
//! The server must be able to reach this process: it listens on `RDEV_E2E_WEBHOOK_LISTEN`
//! (default `127.0.0.1:0`) and is announced as `RDEV_E2E_WEBHOOK_HOST` (default the listen
//! address). Loopback needs `RDEV_WEBHOOK_ALLOW_PRIVATE=true` on the server, as scripts/e2e sets.

mod common;

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, http::StatusCode, routing::post};
use common::{E2e, marker};
use serde_json::{Value, json};

/// How long a delivery may take to arrive (the server's first retry included).
const DELIVERY_WAIT: Duration = Duration::from_secs(90);

#[derive(Clone)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Default)]
struct Inbox {
    received: Mutex<Vec<Received>>,
    /// Message ids answered 500 once already (when failing first attempts).
    failed_once: Mutex<HashSet<String>>,
    fail_first_attempts: bool,
}

async fn receive(State(inbox): State<Arc<Inbox>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    inbox.received.lock().unwrap().push(Received { headers, body });
    if inbox.fail_first_attempts && inbox.failed_once.lock().unwrap().insert(id) {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    StatusCode::NO_CONTENT
}

/// Starts a receiver; returns its URL and inbox.
async fn receiver(fail_first_attempts: bool) -> (String, Arc<Inbox>) {
    let listen = std::env::var("RDEV_E2E_WEBHOOK_LISTEN").unwrap_or_else(|_| "127.0.0.1:0".into());
    let listener = tokio::net::TcpListener::bind(&listen).await.expect("webhook receiver binds");
    let addr = listener.local_addr().unwrap();
    let host = std::env::var("RDEV_E2E_WEBHOOK_HOST").unwrap_or_else(|_| addr.ip().to_string());
    let inbox = Arc::new(Inbox { fail_first_attempts, ..Inbox::default() });
    let router = Router::new().route("/hook", post(receive)).with_state(inbox.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (format!("http://{host}:{}/hook", addr.port()), inbox)
}

/// The deliveries that carry `marker` (other tests run commands at the same time).
fn carrying(inbox: &Inbox, marker: &str) -> Vec<Received> {
    inbox.received.lock().unwrap().iter().filter(|r| r.json().to_string().contains(marker)).cloned().collect()
}

fn verify(request: &Received, secret: &str) {
    let mut headers = reqwest::header::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        headers.insert(name, request.header(name).parse().expect("signature headers present"));
    }
    standardwebhooks::Webhook::new(secret)
        .expect("a whsec_ secret")
        .verify(&request.body, &headers)
        .expect("the delivery verifies with an independent Standard Webhooks implementation");
}

async fn create(e2e: &E2e, key: &str, url: &str, events: &[&str]) -> (String, String) {
    let created = e2e.post("/webhooks", key, json!({"url": url, "events": events, "description": "e2e"})).await;
    assert_eq!(created.status, 201, "creating a webhook: {}", created.text);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let secret = created.body["secret"].as_str().expect("the secret, shown once").to_owned();
    assert!(secret.starts_with("whsec_"));
    (id, secret)
}

#[tokio::test]
async fn a_finished_command_is_delivered_signed_to_its_subscriber() {
    let Some(e2e) = common::target("webhooks::delivered") else { return };
    let key = e2e.admin("webhooks-delivered").await;
    let (url, inbox) = receiver(false).await;
    let (webhook, secret) = create(&e2e, &key, &url, &["command.succeeded", "command.failed"]).await;
    let shown = e2e.get(&format!("/webhooks/{webhook}"), &key).await;
    assert_eq!(shown.status, 200);
    assert!(shown.body.get("secret").is_none(), "the secret is never shown again");

    let marker = marker();
    let ran = e2e.shell(&key, json!({"command": format!("echo {marker}")})).await;
    assert_eq!(ran.status, 200, "{}", ran.text);
    let request =
        e2e.eventually("the delivery", DELIVERY_WAIT, || async { carrying(&inbox, &marker).into_iter().next() }).await;
    verify(&request, &secret);
    let body = request.json();
    assert_eq!(body["type"], "command.succeeded");
    assert_eq!(body["data"]["execution_id"], ran.body["execution_id"]);

    let id = request.header("webhook-id").to_owned();
    let delivery = e2e
        .eventually("the recorded delivery", DELIVERY_WAIT, || async {
            let listed = e2e.get(&format!("/webhooks/{webhook}/deliveries?status=succeeded"), &key).await;
            listed.body["deliveries"]
                .as_array()?
                .iter()
                .find(|d| d["id"].as_str().is_some_and(|d| id.ends_with(&d.replace('-', ""))))
                .cloned()
        })
        .await;
    assert_eq!(delivery["attempts"][0]["status_code"], 204);
    assert!(delivery["attempts"][0]["latency_ms"].is_u64());

    assert_eq!(e2e.delete(&format!("/webhooks/{webhook}"), &key).await.status, 204);
    e2e.get(&format!("/webhooks/{webhook}"), &key).await.assert_error(404, "NOT_FOUND");
}

#[tokio::test]
async fn a_failed_attempt_is_retried_with_the_same_webhook_id() {
    let Some(e2e) = common::target("webhooks::retried") else { return };
    let key = e2e.admin("webhooks-retried").await;
    let (url, inbox) = receiver(true).await;
    let (webhook, secret) = create(&e2e, &key, &url, &["command.failed"]).await;

    let marker = marker();
    let ran = e2e.shell(&key, json!({"command": format!("echo {marker}; exit 4")})).await;
    assert_eq!(ran.body["exit_code"], 4);
    let requests = e2e
        .eventually("two attempts", DELIVERY_WAIT, || async {
            let seen = carrying(&inbox, &marker);
            (seen.len() >= 2).then_some(seen)
        })
        .await;
    assert_eq!(requests[0].header("webhook-id"), requests[1].header("webhook-id"));
    requests.iter().for_each(|r| verify(r, &secret));
    assert_eq!(requests[0].json()["type"], "command.failed");

    let delivery = e2e
        .eventually("the delivery recorded as succeeded", DELIVERY_WAIT, || async {
            let listed = e2e.get(&format!("/webhooks/{webhook}/deliveries?status=succeeded"), &key).await;
            listed.body["deliveries"].as_array()?.first().cloned()
        })
        .await;
    let codes: Vec<&Value> = delivery["attempts"].as_array().unwrap().iter().map(|a| &a["status_code"]).collect();
    assert_eq!(codes, [&json!(500), &json!(204)]);
    e2e.delete(&format!("/webhooks/{webhook}"), &key).await;
}

#[tokio::test]
async fn webhook_requests_are_validated() {
    let Some(e2e) = common::target("webhooks::validated") else { return };
    let key = e2e.admin("webhooks-validated").await;
    for body in [
        json!({"url": "ftp://example.com/hook"}),
        json!({"url": "https://example.com/hook", "events": []}),
        json!({"url": "https://example.com/hook", "events": ["command.exploded"]}),
        json!({"url": "https://example.com/hook", "secret": "mine"}),
    ] {
        let refused = e2e.post("/webhooks", &key, body.clone()).await;
        assert_eq!(refused.status, 400, "{body}: {}", refused.text);
    }
    let (_, reader) = e2e.create_key("webhooks-reader", &["projects:read"]).await;
    e2e.get("/webhooks", &reader).await.assert_error(403, "FORBIDDEN");
    let unknown = uuid::Uuid::new_v4();
    e2e.get(&format!("/webhooks/{unknown}/deliveries"), &key).await.assert_error(404, "NOT_FOUND");
}
