//! v2: every run is a command with an output log (head and tail kept, replayed and resumed
//! through `/commands/{id}/events`, raw through `/output`), and `Idempotency-Key`.

mod common;

use common::E2e;
use serde_json::{Value, json};

/// A finished command's `/events`, whole: `(id, event, data)` per event.
async fn events(e2e: &E2e, key: &str, id: &str, last_event_id: Option<&str>) -> Vec<(String, String, String)> {
    let mut request = e2e.client.get(e2e.url(&format!("/commands/{id}/events"))).header("X-API-Key", key);
    if let Some(last) = last_event_id {
        request = request.header("Last-Event-ID", last);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    text.split("\n\n")
        .filter_map(|block| {
            let field = |name: &str| {
                let lines: Vec<&str> = block.lines().filter_map(|l| l.strip_prefix(&format!("{name}:"))).collect();
                (!lines.is_empty())
                    .then(|| lines.iter().map(|l| l.strip_prefix(' ').unwrap_or(l)).collect::<Vec<_>>().join("\n"))
            };
            Some((field("id")?, field("event")?, field("data").unwrap_or_default()))
        })
        .collect()
}

#[tokio::test]
async fn a_run_is_a_command_whose_output_keeps_head_and_tail_and_replays() {
    let Some(e2e) = common::target("output::log") else { return };
    let (_, key) = e2e.create_key("output", &["commands:execute", "commands:read"]).await;
    let command = "head -c 3000 /dev/zero | tr '\\0' a; printf END; echo warn >&2";
    let ran = e2e.shell(&key, json!({"command": command, "max_output_bytes": 1024})).await;
    assert_eq!(ran.status, 200, "{}", ran.text);
    assert_eq!(ran.body["stdout_omitted"], json!({"offset": 512, "bytes": 3003 - 1024}));
    assert_eq!(ran.body["stdout"], format!("{}{}END", "a".repeat(512), "a".repeat(509)));
    let id = ran.body["execution_id"].as_str().unwrap().to_owned();

    let stored = e2e.get(&format!("/commands/{id}"), &key).await;
    assert_eq!((stored.status, stored.body["origin"].as_str()), (200, Some("shell")), "{}", stored.text);
    assert_eq!(stored.body["stdout"], ran.body["stdout"]);
    let output = e2e.client.get(e2e.url(&format!("/commands/{id}/output?stream=stdout"))).header("X-API-Key", &key);
    let output = output.send().await.unwrap();
    assert_eq!(output.headers()["rdev-output-complete"], "true");
    assert_eq!(output.headers()["rdev-output-omitted-bytes"], "1979");
    assert_eq!(output.text().await.unwrap(), ran.body["stdout"].as_str().unwrap());

    let all = events(&e2e, &key, &id, None).await;
    let names: Vec<&str> = all.iter().map(|(_, name, _)| name.as_str()).collect();
    assert!(names.contains(&"gap") && names.contains(&"stderr"), "{names:?}");
    assert_eq!(names.last(), Some(&"exit"));
    let exit: Value = serde_json::from_str(&all.last().unwrap().2).unwrap();
    assert_eq!((exit["id"].as_str(), exit["status"].as_str()), (Some(id.as_str()), Some("succeeded")));
    let first_id = all[0].0.clone();
    assert_eq!(events(&e2e, &key, &id, Some(&first_id)).await, all[1..], "resumed after the first event");
}

#[tokio::test]
async fn an_idempotency_key_runs_once_and_replays_the_first_answer() {
    let Some(e2e) = common::target("output::idempotency") else { return };
    let (_, key) = e2e.create_key("idempotent", &["commands:execute", "commands:read"]).await;
    let keyed = |idempotency_key: &str, body: Value| {
        let path = format!("/projects/{}/shell", e2e.project);
        let request = e2e.client.post(e2e.url(&path)).header("X-API-Key", &key);
        e2e.send(request.header("Idempotency-Key", idempotency_key).json(&body))
    };
    let name = common::marker();
    let body = json!({"command": format!("echo {name}")});
    let first = keyed(&name, body.clone()).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.header("idempotent-replayed"), None);
    let again = keyed(&name, body).await;
    assert_eq!((again.status, again.header("idempotent-replayed")), (200, Some("true")));
    assert_eq!(again.body["execution_id"], first.body["execution_id"], "the same run");
    keyed(&name, json!({"command": "echo other"})).await.assert_error(422, "IDEMPOTENCY_KEY_REUSED");
    keyed("not visible", json!({"command": "true"})).await.assert_error(400, "VALIDATION_FAILED");
}
