//! `stdin` and `stdin_base64` on every way to run a command, on every backend: the bytes then
//! EOF, exactly; without them, stdin is closed at start.

use base64::Engine as _;
use serde_json::json;

use crate::{
    on_every_backend,
    support::{Backend, TestApp},
};

on_every_backend!(
    text_stdin_reaches_the_command_then_eof,
    every_byte_value_survives_stdin_base64,
    without_stdin_cat_ends_at_once,
    queued_and_streamed_commands_take_stdin_too,
    bad_stdin_is_refused_field_by_field,
);

async fn text_stdin_reaches_the_command_then_eof(backend: Backend) {
    let app = TestApp::on(backend).await;
    let reply = app.shell("hello", json!({"command": "wc -c", "stdin": "hello"})).await;
    assert_eq!((reply.status, reply.body["stdout"].as_str().map(str::trim)), (200, Some("5")), "{}", reply.body);
    let lines =
        app.shell("hello", json!({"command": "while read -r l; do echo \"<$l>\"; done", "stdin": "a\nb c\n"})).await;
    assert_eq!(lines.body["stdout"], "<a>\n<b c>\n");
}

async fn every_byte_value_survives_stdin_base64(backend: Backend) {
    let app = TestApp::on(backend).await;
    let bytes: Vec<u8> = (0..=255).collect();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let reply = app.shell("hello", json!({"command": "od -An -v -tx1", "stdin_base64": encoded})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let seen: Vec<u8> = reply.body["stdout"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .map(|hex| u8::from_str_radix(hex, 16).unwrap())
        .collect();
    assert_eq!(seen, bytes);
}

async fn without_stdin_cat_ends_at_once(backend: Backend) {
    let app = TestApp::on(backend).await;
    let reply = app.shell("hello", json!({"command": "cat; echo done", "timeout_secs": 30})).await;
    assert_eq!((reply.body["stdout"].as_str(), reply.body["timed_out"].as_bool()), (Some("done\n"), Some(false)));
    assert!(reply.body["duration_ms"].as_u64().unwrap() < 10_000, "{}", reply.body);
}

async fn queued_and_streamed_commands_take_stdin_too(backend: Backend) {
    let app = TestApp::on(backend).await;
    let queued =
        app.post("/projects/hello/commands", &app.admin_key, json!({"command": "wc -c", "stdin": "queued"})).await;
    assert_eq!(queued.status, 202, "{}", queued.body);
    let done = app.wait_for_command(queued.body["id"].as_str().unwrap(), |c| c["status"] == "succeeded").await;
    assert_eq!(done["stdout"].as_str().map(str::trim), Some("6"));

    let response = app
        .client
        .post(app.url("/projects/hello/shell"))
        .header("X-API-Key", &app.admin_key)
        .header("Accept", "text/event-stream")
        .json(&json!({"command": "cat", "stdin": "streamed"}))
        .send()
        .await
        .unwrap();
    let events = crate::support::sse::SseReader::new(response).rest().await;
    let stdout: String = events.iter().filter(|e| e.event == "stdout").map(|e| e.data.as_str()).collect();
    assert_eq!(stdout, "streamed");
}

async fn bad_stdin_is_refused_field_by_field(backend: Backend) {
    let app = TestApp::on(backend).configure(|config| config.executor.max_stdin_bytes = 8).await;
    let both = app.shell("hello", json!({"command": "cat", "stdin": "a", "stdin_base64": "YQ=="})).await;
    assert_eq!((both.status, both.error_code()), (400, "VALIDATION_FAILED"));
    assert!(both.field_error("stdin_base64").is_some(), "{}", both.body);
    let garbled = app.shell("hello", json!({"command": "cat", "stdin_base64": "%%%"})).await;
    assert!(garbled.field_error("stdin_base64").unwrap().contains("base64"), "{}", garbled.body);
    let long = app.shell("hello", json!({"command": "cat", "stdin": "123456789"})).await;
    assert!(long.field_error("stdin").unwrap().contains("RDEV_MAX_STDIN_BYTES"), "{}", long.body);
    let fits = app.shell("hello", json!({"command": "cat", "stdin": "12345678"})).await;
    assert_eq!(fits.body["stdout"], "12345678");
}

/// An API server that speaks only `v4.channel.k8s.io` cannot half-close stdin; the command
/// still sees EOF after exactly its bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_v4_only_cluster_stdin_still_ends() {
    let app = TestApp::on(Backend::Kubernetes).await;
    app.kube.as_ref().unwrap().set_v4_only(true);
    let reply = app.shell("hello", json!({"command": "wc -c; cat", "stdin": "hello", "timeout_secs": 20})).await;
    assert_eq!(
        (reply.body["stdout"].as_str().map(str::trim), reply.body["timed_out"].as_bool()),
        (Some("5"), Some(false))
    );
    let bytes: Vec<u8> = (0..=255).collect();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let reply = app.shell("hello", json!({"command": "od -An -v -tx1 | wc -w", "stdin_base64": encoded})).await;
    assert_eq!(reply.body["stdout"].as_str().map(str::trim), Some("256"));
}

/// The default limit, 1 MiB, fits through `stdin_base64` (the body limit grows to leave room);
/// past it, the field is refused, and a body past the grown limit is a 413.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mebibyte_of_stdin_fits_and_more_is_refused() {
    let app = TestApp::on(Backend::Local(crate::support::Db::Sqlite)).await;
    let encode = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![b'x'; n]);
    let reply = app.shell("hello", json!({"command": "wc -c", "stdin_base64": encode(1 << 20)})).await;
    assert_eq!(
        (reply.status, reply.body["stdout"].as_str().map(str::trim)),
        (200, Some("1048576")),
        "{}",
        reply.error_code()
    );
    let over = app.shell("hello", json!({"command": "wc -c", "stdin_base64": encode((1 << 20) + 1)})).await;
    assert_eq!((over.status, over.field_error("stdin_base64").is_some()), (400, true));
    let huge = app.shell("hello", json!({"command": "wc -c", "stdin": "x".repeat(3 << 20)})).await;
    assert_eq!((huge.status, huge.error_code()), (413, "PAYLOAD_TOO_LARGE"));
}
