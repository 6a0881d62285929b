//! Owns pod watches: a chunked stream of JSON watch events, one per line, as the API server
//! sends them, fed from the store's history and woken by each change.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::Fault;
use crate::selector::Selector;
use crate::server::Shared;

/// How often a watch that allows them gets a `BOOKMARK`.
const BOOKMARK_EVERY: Duration = Duration::from_secs(1);
/// The API server's longest watch without `timeoutSeconds` is 30 to 60 min; one is plenty here.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

struct Watch {
    shared: Arc<Shared>,
    namespace: Option<String>,
    selector: Selector,
    /// The version delivered up to.
    cursor: u64,
    pending: VecDeque<Value>,
    bookmarks: bool,
    deadline: Instant,
    changes: tokio::sync::watch::Receiver<u64>,
    faults: tokio::sync::watch::Receiver<Fault>,
    generation: tokio::sync::watch::Receiver<u64>,
    ended: bool,
}

pub(crate) fn respond(
    shared: Arc<Shared>,
    namespace: Option<String>,
    selector: Selector,
    query: &HashMap<String, String>,
) -> Response {
    let from = query.get("resourceVersion").and_then(|v| v.parse::<u64>().ok()).filter(|v| *v > 0);
    let timeout = query.get("timeoutSeconds").and_then(|v| v.parse().ok()).map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    let mut watch = Watch {
        changes: shared.pods.subscribe(),
        faults: shared.faults(),
        generation: shared.watch_generation(),
        shared,
        namespace,
        selector,
        cursor: 0,
        pending: VecDeque::new(),
        bookmarks: query.get("allowWatchBookmarks").is_some_and(|v| v == "true" || v == "1"),
        deadline: Instant::now() + timeout,
        ended: false,
    };
    match from {
        Some(version) => watch.cursor = version,
        None => {
            let (version, added) = watch.shared.pods.current(watch.namespace.as_deref(), &watch.selector);
            watch.cursor = version;
            watch.pending.extend(added);
        }
    }
    let stream = futures_util::stream::unfold(watch, |mut watch| async move {
        let line = watch.next().await?;
        let item = line.map(|value| {
            let mut text = value.to_string();
            text.push('\n');
            Bytes::from(text)
        });
        Some((item, watch))
    });
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], Body::from_stream(stream)).into_response()
}

impl Watch {
    /// The next event; `Err` cuts the connection (the "server" went away); `None` ends it.
    async fn next(&mut self) -> Option<Result<Value, std::io::Error>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            if self.ended {
                return None;
            }
            match self.shared.pods.changes_since(self.cursor, self.namespace.as_deref(), &self.selector) {
                Err(expired) => {
                    self.ended = true;
                    let message = format!("too old resource version: {} ({})", self.cursor, expired.oldest);
                    return Some(Ok(json!({
                        "type": "ERROR",
                        "object": {
                            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message, "reason": "Expired", "code": 410,
                        },
                    })));
                }
                Ok((version, events)) => {
                    self.cursor = version;
                    if !events.is_empty() {
                        self.pending.extend(events);
                        continue;
                    }
                }
            }
            tokio::select! {
                _ = self.changes.changed() => {}
                () = tokio::time::sleep(BOOKMARK_EVERY), if self.bookmarks => {
                    self.pending.push_back(json!({
                        "type": "BOOKMARK",
                        "object": { "kind": "Pod", "apiVersion": "v1", "metadata": { "resourceVersion": self.cursor.to_string() } },
                    }));
                }
                () = tokio::time::sleep_until(self.deadline) => self.ended = true,
                _ = self.faults.wait_for(|fault| *fault == Fault::Refuse) => return Some(Err(cut())),
                _ = self.generation.changed() => return Some(Err(cut())),
            }
        }
    }
}

fn cut() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "fake-kube cut the watch")
}
