//! Metrics, traces and logs, as Prometheus, a collector and an operator see them.

use std::sync::Arc;

use axum::{Router, body::Bytes, extract::State, routing::post};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use rdev_api::domain::ApiKeySecret;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::support::{Db, TestApp, process::ServerProcess, receiver::Receiver};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_carry_every_series_with_bounded_labels_and_pass_promtool() {
    let app = TestApp::on(Db::Sqlite).await;
    assert_eq!(app.get("/projects/missing", &app.admin_key).await.status, 404);
    assert_eq!(app.shell("hello", json!({"command": "true"})).await.status, 200);
    assert_eq!(app.shell("hello", json!({"command": "exit 1"})).await.status, 200);
    let queued = app.post("/projects/hello/commands", &app.admin_key, json!({"command": "true"})).await;
    app.wait_for_command(queued.body["id"].as_str().unwrap(), |c| c["status"] == "succeeded").await;
    let one = app
        .post(
            "/api-keys",
            &app.admin_key,
            json!({"name": "one", "scopes": ["projects:read"], "rate_limit_per_minute": 1}),
        )
        .await;
    let one = one.body["key"].as_str().unwrap();
    app.get("/projects", one).await;
    assert_eq!(app.get("/projects", one).await.status, 429);

    let scrape = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert!(scrape.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = scrape.text().await.unwrap();
    for series in [
        r#"http_requests_total{method="GET",route="/projects/{id}",status="404"} 1"#,
        r#"http_requests_total{method="POST",route="/projects/{id}/shell",status="200"} 2"#,
        r#"http_request_duration_seconds_bucket{method="GET",route="/projects/{id}",le="0.005"}"#,
        r#"command_executions_total{executor="local",outcome="succeeded"} 2"#,
        r#"command_executions_total{executor="local",outcome="failed"} 1"#,
        r#"command_duration_seconds_count{executor="local"} 3"#,
        "rate_limited_requests_total 1",
        r#"cache_requests_total{cache="api_keys",result="hit"}"#,
        r#"rdev_build_info{version=""#,
        r#"command_queue_depth{priority="9"} 0"#,
        "command_queue_wait_seconds_count 1",
        r#"webhook_deliveries_total{outcome="failed"} 0"#,
    ] {
        assert!(text.contains(series), "{series} in\n{text}");
    }
    assert!(!text.contains("/projects/missing"), "raw paths never become labels");

    match which("promtool") {
        Some(promtool) => {
            let mut child = std::process::Command::new(promtool)
                .args(["check", "metrics"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success() && report.trim().is_empty(), "promtool: {report}");
        }
        None if std::env::var_os("CI").is_some() => {
            panic!("promtool is missing in CI (.ci/run installs Debian's prometheus)")
        }
        None => eprintln!("promtool not installed: skipping `promtool check metrics` (apt-get install prometheus)"),
    }
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(program)).find(|path| path.is_file())
}

/// One received span: trace id (hex), name, and whether it has a parent.
#[derive(Debug, Clone)]
struct ReceivedSpan {
    trace_id: String,
    name: String,
    attributes: Vec<(String, String)>,
}

/// An OTLP/HTTP trace receiver (protobuf), as a collector would run it.
async fn otlp_receiver() -> (String, watch::Receiver<Vec<ReceivedSpan>>) {
    let (tx, rx) = watch::channel(Vec::new());
    async fn export(State(spans): State<Arc<watch::Sender<Vec<ReceivedSpan>>>>, body: Bytes) -> &'static str {
        let Ok(request) = ExportTraceServiceRequest::decode(body) else { return "" };
        let received =
            request.resource_spans.into_iter().flat_map(|r| r.scope_spans).flat_map(|s| s.spans).map(|span| {
                ReceivedSpan {
                    trace_id: span.trace_id.iter().map(|b| format!("{b:02x}")).collect(),
                    name: span.name,
                    attributes: span.attributes.into_iter().map(|kv| (kv.key, format!("{:?}", kv.value))).collect(),
                }
            });
        spans.send_modify(|all| all.extend(received));
        ""
    }
    let router = Router::new().route("/v1/traces", post(export)).with_state(Arc::new(tx));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_of_a_shell_request_reach_the_collector_under_the_clients_trace_id() {
    let (collector, mut spans) = otlp_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let key = ApiKeySecret::generate().expose().to_owned();
    let mut server = ServerProcess::start(
        dir.path(),
        &[
            ("RDEV_BOOTSTRAP_API_KEY", &key),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector),
            ("RDEV_WEBHOOK_ALLOW_PRIVATE", "true"),
        ],
    )
    .await;
    let receiver = Receiver::start(&[]).await;
    server.post_json("/webhooks", &key, &json!({"url": receiver.url()})).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let reply = crate::support::http_client()
        .post(server.url("/projects/hello/shell"))
        .header("X-API-Key", &key)
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&json!({"command": "echo traced"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    // The webhook delivery carries the trace on to the receiver.
    let delivered = receiver.wait_for(1).await;
    let traceparent = delivered[0].header("traceparent");
    assert!(traceparent.starts_with(&format!("00-{trace_id}-")), "traceparent {traceparent:?}");
    // Shutdown flushes the batch; no waiting on the export interval.
    assert!(server.terminate().await.success());
    let received = spans.wait_for(|all| all.iter().any(|s| s.name == "command.execute")).await.unwrap().clone();
    let ours: Vec<_> = received.iter().filter(|s| s.trace_id == trace_id).collect();
    let names: Vec<_> = ours.iter().map(|s| s.name.as_str()).collect();
    for expected in ["POST /projects/{id}/shell", "command.execute", "db audit.record", "webhook.deliver"] {
        assert!(names.contains(&expected), "{expected} under the client's trace id; got {names:?}");
    }
    let request = ours.iter().find(|s| s.name == "POST /projects/{id}/shell").unwrap();
    let attribute =
        |key: &str| request.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).unwrap_or_default();
    assert!(attribute("http.route").contains("/projects/{id}/shell"));
    assert!(attribute("http.request.method").contains("POST"));
    assert!(attribute("http.response.status_code").contains("200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_project_logs_project_not_found_with_its_id_in_text_and_json() {
    for format in ["text", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let key = ApiKeySecret::generate().expose().to_owned();
        let mut server =
            ServerProcess::start(dir.path(), &[("RDEV_BOOTSTRAP_API_KEY", &key), ("RDEV_LOG_FORMAT", format)]).await;
        let reply = crate::support::http_client()
            .get(server.url("/projects/ghost-pod"))
            .header("X-API-Key", &key)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 404);
        let request_id = reply.headers()["x-request-id"].to_str().unwrap().to_owned();
        let line = server.wait_for_line("project not found").await;
        assert!(server.terminate().await.success());
        if format == "text" {
            assert!(line.contains("project_id=ghost-pod") && line.contains(&request_id), "{line}");
            continue;
        }
        let logs = server.output();
        let stdout_lines = logs.lines().filter(|l| l.starts_with('{'));
        let parsed: Vec<Value> =
            stdout_lines.map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
        assert!(parsed.len() >= 2, "JSON lines: {logs}");
        let event = parsed.iter().find(|l| l["message"] == "project not found").expect("the line");
        assert_eq!(event["project_id"], "ghost-pod");
        assert_eq!(event["span"]["request_id"], request_id.as_str(), "{event}");
    }
}
