//! `POST /projects/{id}/shell` with `Accept: text/event-stream`, on both executors.

use serde_json::{Value, json};

use crate::{
    on_every_backend,
    support::{Backend, TestApp, sse::SseReader, survivors_of},
};

on_every_backend!(
    output_arrives_while_the_command_runs_then_the_exit_event,
    a_client_that_disconnects_kills_the_command,
    refusals_before_the_stream_are_plain_json_errors,
    past_its_budget_a_stream_sends_the_head_then_the_gap_and_the_tail,
);

/// The stream of `POST /projects/hello/shell`, as `(event, data)`, with the ids seen.
struct Events {
    reader: SseReader,
    /// The `id:` of every event read so far.
    ids: Vec<u64>,
}

impl Events {
    async fn open(app: &TestApp, body: Value) -> Self {
        let response = app
            .client
            .post(app.url("/projects/hello/shell"))
            .header("X-API-Key", &app.admin_key)
            .header("Accept", "text/event-stream")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        Self { reader: SseReader::new(response), ids: Vec::new() }
    }

    async fn next(&mut self) -> Option<(String, String)> {
        let event = self.reader.next().await?;
        self.ids.extend(event.id);
        Some((event.event, event.data))
    }
}

async fn output_arrives_while_the_command_runs_then_the_exit_event(backend: Backend) {
    let app = TestApp::on(backend).await;
    let go = app.project_path("hello").join("go");
    let command = "echo first; while [ ! -f go ]; do sleep 0.02; done; echo second >&2; exit 4";
    let mut events = Events::open(&app, json!({"command": command})).await;
    assert_eq!(events.next().await, Some(("stdout".into(), "first\n".into())), "the chunk arrives while it waits");
    // Only now may the command go on: it was still running when the chunk arrived.
    std::fs::write(&go, "").unwrap();
    assert_eq!(events.next().await, Some(("stderr".into(), "second\n".into())));
    let (name, data) = events.next().await.unwrap();
    assert_eq!(name, "exit");
    let exit: Value = serde_json::from_str(&data).unwrap();
    assert_eq!((exit["exit_code"].as_i64(), exit["project_id"].as_str()), (Some(4), Some("hello")));
    assert!(exit.get("stdout").is_none() && exit["execution_id"].is_string());
    assert_eq!(events.next().await, None, "the stream ends after exit");
    let audit = app.get("/audit?project_id=hello", &app.admin_key).await;
    assert_eq!(audit.body["entries"][0]["id"], exit["execution_id"]);
}

async fn a_client_that_disconnects_kills_the_command(backend: Backend) {
    let app = TestApp::on(backend).await;
    let marker = format!("300.{}", uuid::Uuid::new_v4().as_u128() % 1_000_000);
    let mut events =
        Events::open(&app, json!({"command": format!("echo ready; sleep {marker} & sleep {marker}")})).await;
    assert_eq!(events.next().await.map(|e| e.0), Some("stdout".into()));
    drop(events);
    // The server records the killed command once it is gone: wait for that row.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let audit = app.get("/audit?project_id=hello", &app.admin_key).await;
        // Its client stopped it: `cancelled`, saying why (not `failed` with "internal error").
        if audit.body["entries"][0]["outcome"] == "cancelled" {
            let id = audit.body["entries"][0]["id"].as_str().unwrap_or_default().to_owned();
            let command = app.get(&format!("/commands/{id}"), &app.admin_key).await;
            assert_eq!(command.body["status"], "cancelled", "{}", command.body);
            assert_eq!(command.body["error"], "the client went away; command killed", "{}", command.body);
            assert_eq!(audit.body["entries"][0]["reason"], "the client went away; command killed");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no audit entry for the killed command: {}", audit.body);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    app.commands_settled().await;
    assert_eq!(survivors_of(&marker).await, Vec::<u32>::new());
}

async fn refusals_before_the_stream_are_plain_json_errors(backend: Backend) {
    let app = TestApp::on(backend).await;
    let request = |project: &str, body: Value| {
        app.client
            .post(app.url(&format!("/projects/{project}/shell")))
            .header("X-API-Key", &app.admin_key)
            .header("Accept", "text/event-stream")
            .json(&body)
    };
    let invalid = app.send(request("hello", json!({"command": "ls", "workdir": "../x"}))).await;
    assert_eq!((invalid.status, invalid.error_code()), (400, "VALIDATION_FAILED"));
    let missing = app.send(request("nope", json!({"command": "ls"}))).await;
    assert_eq!((missing.status, missing.message()), (404, "project not found"));

    // What only the executor can tell (the workdir as the project's files have it) is checked
    // before the stream starts too, and audited as a refusal.
    let project = app.project_path("hello");
    std::fs::write(project.join("a-file"), "").unwrap();
    let mut refused = vec![("missing", "does not exist in the project"), ("a-file", "is not a folder")];
    if matches!(backend, Backend::Local(_)) {
        // In a container the pod is the boundary; on the local executor the folder is.
        std::os::unix::fs::symlink("/etc", project.join("out")).unwrap();
        refused.push(("out", "must not escape the project"));
    }
    for (workdir, why) in refused {
        let reply = app.send(request("hello", json!({"command": "echo ran >> ran", "workdir": workdir}))).await;
        assert_eq!((reply.status, reply.error_code()), (400, "VALIDATION_FAILED"), "{workdir}: {}", reply.body);
        let said = reply.field_error("workdir").unwrap_or_default();
        assert!(matches!(backend, Backend::Kubernetes) || said == why, "{workdir}: {said}");
    }
    assert!(!project.join("ran").exists(), "nothing ran");
    let audit = app.get("/audit?project_id=hello", &app.admin_key).await;
    let outcomes: Vec<_> = audit.body["entries"].as_array().unwrap().iter().map(|e| e["outcome"].clone()).collect();
    assert!(outcomes.len() >= 3 && outcomes.iter().all(|o| o == "rejected"), "{outcomes:?}");
}

async fn past_its_budget_a_stream_sends_the_head_then_the_gap_and_the_tail(backend: Backend) {
    let app = TestApp::on(backend).await;
    let command = "head -c 5000 /dev/zero | tr '\\0' a; printf END";
    let mut events = Events::open(&app, json!({"command": command, "max_output_bytes": 1024})).await;
    let mut head = String::new();
    let (gap, tail) = loop {
        match events.next().await.unwrap() {
            (name, data) if name == "stdout" => head.push_str(&data),
            (name, gap) if name == "gap" => break (gap, events.next().await.unwrap()),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(head, "a".repeat(512), "the head arrives as it is written");
    let gap: Value = serde_json::from_str(&gap).unwrap();
    assert_eq!(gap, json!({"stream": "stdout", "offset": 512, "bytes": 5003 - 1024}));
    assert_eq!(tail, ("stdout".into(), format!("{}END", "a".repeat(509))), "then the tail");
    let (name, exit) = events.next().await.unwrap();
    assert_eq!(name, "exit");
    let exit: Value = serde_json::from_str(&exit).unwrap();
    assert_eq!(exit["stdout_omitted"], json!({"offset": 512, "bytes": 5003 - 1024}));
    assert!(events.ids.windows(2).all(|w| w[0] < w[1]), "ids strictly increase: {:?}", events.ids);
    assert_eq!(events.ids.first(), Some(&1));
}
