//! What every end-to-end test shares: the target server from the environment, a client, keys made
//! for the test, and small readers for JSON answers and Server-Sent Events.
//!
//! Each test binary includes this module and uses part of it.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The server under test, or `None` (with a note on stderr) when `RDEV_E2E_URL` is unset, so the
/// ordinary workspace test run passes at once.
pub fn target(test: &str) -> Option<E2e> {
    let Ok(url) = std::env::var("RDEV_E2E_URL") else {
        eprintln!("skipping {test}: RDEV_E2E_URL is not set (scripts/e2e runs this suite against a real server)");
        return None;
    };
    let admin_key =
        std::env::var("RDEV_E2E_API_KEY").expect("RDEV_E2E_API_KEY (an admin key) must be set with RDEV_E2E_URL");
    let project = std::env::var("RDEV_E2E_PROJECT").unwrap_or_else(|_| "hello".to_owned());
    // reqwest's rustls needs a process-wide provider; ring, like the service.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().expect("HTTP client");
    Some(E2e { base: url.trim_end_matches('/').to_owned(), admin_key, project, client })
}

pub struct E2e {
    pub base: String,
    pub admin_key: String,
    pub project: String,
    pub client: reqwest::Client,
}

/// An answer read in full.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    /// The body as JSON, `Null` when it is not JSON.
    pub body: Value,
}

impl Reply {
    pub fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    pub fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the contract's error shape: `{"error":{"code","message","request_id",…}}` as JSON.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!((self.status, self.error_code()), (status, code), "unexpected answer: {self:?}");
        let content_type = self.header("content-type").unwrap_or("");
        assert!(content_type.starts_with("application/json"), "error content type {content_type:?}: {self:?}");
        assert!(self.body["error"]["message"].is_string(), "error without a message: {}", self.text);
        assert!(self.body["error"]["request_id"].is_string(), "error without a request_id: {}", self.text);
    }
}

impl E2e {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("request to the server under test");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("response body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, headers, text, body }
    }

    pub async fn get(&self, path: &str, key: &str) -> Reply {
        self.send(self.client.get(self.url(path)).header("X-API-Key", key)).await
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> Reply {
        self.send(self.client.post(self.url(path)).header("X-API-Key", key).json(&body)).await
    }

    pub async fn patch(&self, path: &str, key: &str, body: Value) -> Reply {
        self.send(self.client.patch(self.url(path)).header("X-API-Key", key).json(&body)).await
    }

    pub async fn delete(&self, path: &str, key: &str) -> Reply {
        self.send(self.client.delete(self.url(path)).header("X-API-Key", key)).await
    }

    /// A fresh key with `scopes`, named after the test; returns `(id, secret)`.
    pub async fn create_key(&self, name: &str, scopes: &[&str]) -> (String, String) {
        let name = format!("e2e-{name}-{}", uuid::Uuid::new_v4().simple());
        let reply = self.post("/api-keys", &self.admin_key, json!({"name": name, "scopes": scopes})).await;
        assert_eq!(reply.status, 201, "creating a key: {}", reply.text);
        let id = reply.body["id"].as_str().expect("key id").to_owned();
        let secret = reply.body["key"].as_str().expect("key secret").to_owned();
        (id, secret)
    }

    /// A fresh `admin` key, so tests do not share one rate-limit budget.
    pub async fn admin(&self, name: &str) -> String {
        self.create_key(name, &["admin"]).await.1
    }

    /// Runs `command` in the project and waits for the `Execution`.
    pub async fn shell(&self, key: &str, body: Value) -> Reply {
        self.post(&format!("/projects/{}/shell", self.project), key, body).await
    }

    /// Polls `GET /commands/{id}` until `done` holds, for at most `within`.
    pub async fn wait_for_command(
        &self,
        key: &str,
        id: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let reply = self.get(&format!("/commands/{id}"), key).await;
            assert_eq!(reply.status, 200, "reading command {id}: {}", reply.text);
            if done(&reply.body) {
                return reply.body;
            }
            assert!(Instant::now() < deadline, "command {id} did not get there in {within:?}: {}", reply.text);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls until `check` returns `Some`, for at most `within`; `what` names it in the failure.
    pub async fn eventually<T, F, Fut>(&self, what: &str, within: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + within;
        loop {
            if let Some(found) = check().await {
                return found;
            }
            assert!(Instant::now() < deadline, "{what}: not within {within:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A command that has finished (the queue's final statuses).
pub fn is_final(command: &Value) -> bool {
    !matches!(command["status"].as_str(), Some("queued" | "running"))
}

/// A unique marker to find what this test ran among what others ran.
pub fn marker() -> String {
    format!("e2e-{}", uuid::Uuid::new_v4().simple())
}

/// An SSE response read event by event.
pub struct Events {
    pub response: reqwest::Response,
    buffer: String,
}

impl Events {
    pub fn new(response: reqwest::Response) -> Self {
        Self { response, buffer: String::new() }
    }

    /// The next `(event, data)`, skipping comments (keep-alives); `None` at the end of the stream.
    pub async fn next(&mut self) -> Option<(String, String)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut event, mut data) = (String::new(), Vec::new());
                for line in block.lines() {
                    if let Some(name) = line.strip_prefix("event:") {
                        event = name.trim_start().to_owned();
                    } else if let Some(part) = line.strip_prefix("data:") {
                        data.push(part.strip_prefix(' ').unwrap_or(part).to_owned());
                    }
                }
                if !event.is_empty() {
                    return Some((event, data.join("\n")));
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(60), self.response.chunk())
                .await
                .expect("an SSE chunk within 60 s")
                .expect("reading the SSE stream")?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n"));
        }
    }
}
