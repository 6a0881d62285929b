//! One JSON error shape for every refusal, and the metrics that count them.

mod common;

use serde_json::json;

#[tokio::test]
async fn malformed_json_is_400_bad_request() {
    let Some(e2e) = common::target("errors::malformed_json") else { return };
    let (_, key) = e2e.create_key("malformed", &["commands:execute"]).await;
    let request = e2e
        .client
        .post(e2e.url(&format!("/projects/{}/shell", e2e.project)))
        .header("X-API-Key", &key)
        .header("Content-Type", "application/json")
        .body("{\"command\": \"echo hi\"");
    e2e.send(request).await.assert_error(400, "BAD_REQUEST");
    let wrong_type = e2e
        .client
        .post(e2e.url(&format!("/projects/{}/shell", e2e.project)))
        .header("X-API-Key", &key)
        .header("Content-Type", "text/plain")
        .body("{\"command\": \"echo hi\"}");
    e2e.send(wrong_type).await.assert_error(400, "BAD_REQUEST");
}

#[tokio::test]
async fn an_unknown_route_is_a_json_404() {
    let Some(e2e) = common::target("errors::unknown_route") else { return };
    let reply = e2e.get(&format!("/{}", common::marker()), &e2e.admin_key).await;
    reply.assert_error(404, "NOT_FOUND");
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let Some(e2e) = common::target("errors::too_large") else { return };
    let (_, key) = e2e.create_key("too-large", &["keys:admin"]).await;
    // Over the default RDEV_MAX_BODY_BYTES (256 KiB), but not by so much that the server's early
    // answer races the client's write: the server refuses without reading the rest and closes,
    // and a client still writing megabytes then sees a broken pipe instead of the 413 (as CI
    // once did with 4 MiB). curl stops sending on the early answer; reqwest cannot. (The routes
    // that run commands take 2 MiB more, for stdin.)
    let body = json!({"name": "x".repeat(300 * 1024), "scopes": ["projects:read"]});
    let reply = e2e.post("/api-keys", &key, body).await;
    reply.assert_error(413, "PAYLOAD_TOO_LARGE");
}

#[tokio::test]
async fn no_key_or_an_unknown_key_is_401_and_a_missing_scope_403() {
    let Some(e2e) = common::target("errors::auth") else { return };
    e2e.send(e2e.client.get(e2e.url("/projects"))).await.assert_error(401, "UNAUTHORIZED");
    e2e.get("/projects", "rdev_not-a-key").await.assert_error(401, "UNAUTHORIZED");
    let (_, reader) = e2e.create_key("scope", &["projects:read"]).await;
    e2e.get("/api-keys", &reader).await.assert_error(403, "FORBIDDEN");
    e2e.get("/commands", &reader).await.assert_error(403, "FORBIDDEN");
    e2e.shell(&reader, json!({"command": "true"})).await.assert_error(403, "FORBIDDEN");
}

#[tokio::test]
async fn every_response_has_a_request_id_and_yours_is_echoed() {
    let Some(e2e) = common::target("errors::request_id") else { return };
    let mine = common::marker();
    let reply = e2e.send(e2e.client.get(e2e.url("/projects")).header("X-Request-Id", &mine)).await;
    assert_eq!(reply.header("x-request-id"), Some(mine.as_str()));
    assert_eq!(reply.body["error"]["request_id"], mine.as_str(), "{}", reply.text);
    let health = e2e.send(e2e.client.get(e2e.url("/health"))).await;
    assert_eq!((health.status, health.body["status"].as_str()), (200, Some("ok")));
    assert!(health.header("x-request-id").is_some());
    let ready = e2e.send(e2e.client.get(e2e.url("/ready"))).await;
    assert_eq!((ready.status, ready.body["status"].as_str()), (200, Some("ready")), "{}", ready.text);
}

#[tokio::test]
async fn metrics_count_requests_by_status() {
    let Some(e2e) = common::target("metrics::status_404") else { return };
    let missing = e2e.get(&format!("/{}", common::marker()), &e2e.admin_key).await;
    assert_eq!(missing.status, 404);
    let metrics = e2e.send(e2e.client.get(e2e.url("/metrics"))).await;
    assert_eq!(metrics.status, 200);
    let content_type = metrics.header("content-type").unwrap_or("");
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let counted =
        metrics.text.lines().any(|line| line.starts_with("http_requests_total{") && line.contains("status=\"404\""));
    assert!(counted, "no http_requests_total with status=\"404\" in:\n{}", metrics.text);
}
