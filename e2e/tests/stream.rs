//! `POST /projects/{id}/shell` with `Accept: text/event-stream`: output events, then `exit`.

mod common;

use common::Events;
use serde_json::{Value, json};

#[tokio::test]
async fn output_arrives_as_stdout_and_stderr_events_then_one_exit_event() {
    let Some(e2e) = common::target("stream::events") else { return };
    let (_, key) = e2e.create_key("stream", &["commands:execute"]).await;
    let response = e2e
        .client
        .post(e2e.url(&format!("/projects/{}/shell", e2e.project)))
        .header("X-API-Key", &key)
        .header("Accept", "text/event-stream")
        .json(&json!({"command": "echo one; sleep 0.2; echo two; echo bad >&2; exit 3"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/event-stream"), "{content_type}");

    let mut events = Events::new(response);
    let (mut stdout, mut stderr) = (String::new(), String::new());
    let exit = loop {
        let (name, data) = events.next().await.expect("an exit event before the stream ends");
        match name.as_str() {
            "stdout" => stdout.push_str(&data),
            "stderr" => stderr.push_str(&data),
            "exit" => break data,
            other => panic!("unexpected event {other}: {data}"),
        }
    };
    assert_eq!((stdout.as_str(), stderr.as_str()), ("one\ntwo\n", "bad\n"));
    let exit: Value = serde_json::from_str(&exit).unwrap();
    assert_eq!(exit["exit_code"], 3, "{exit}");
    assert_eq!(exit["project_id"], e2e.project.as_str());
    assert_eq!(exit["timed_out"], false);
    assert!(exit["execution_id"].is_string() && exit.get("stdout").is_none(), "{exit}");
    assert_eq!(events.next().await, None, "the stream ends after exit");
}

#[tokio::test]
async fn refusals_before_the_stream_are_plain_json_errors() {
    let Some(e2e) = common::target("stream::refusals") else { return };
    let (_, key) = e2e.create_key("stream-refused", &["commands:execute"]).await;
    let request = |project: String, body: Value| {
        e2e.client
            .post(e2e.url(&format!("/projects/{project}/shell")))
            .header("X-API-Key", &key)
            .header("Accept", "text/event-stream")
            .json(&body)
    };
    let invalid = e2e.send(request(e2e.project.clone(), json!({"command": "ls", "workdir": "../x"}))).await;
    invalid.assert_error(400, "VALIDATION_FAILED");
    let missing = e2e.send(request(common::marker(), json!({"command": "ls"}))).await;
    missing.assert_error(404, "NOT_FOUND");
    assert_eq!(missing.message(), "project not found");
}
