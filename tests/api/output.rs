//! A queued command's stored output: `/commands/{id}/events` live and replayed from any
//! replica, resumed after any event, and `/commands/{id}/output`; what was stored survives the
//! replica that ran the command.

use std::time::Duration;

use rdev_api::domain::ApiKeySecret;
use serde_json::{Value, json};

use crate::{
    on_both_databases,
    reliability::eventually,
    support::{Db, TestApp, fresh_database, process::ServerProcess, sse::SseReader},
};

on_both_databases!(
    a_follower_on_another_replica_sees_the_output_live_and_the_replay_is_the_same,
    resuming_after_any_event_gives_exactly_the_rest,
    the_kept_output_of_each_stream_is_readable_raw,
    output_stored_before_its_replica_was_killed_stays_readable,
    a_run_now_is_a_command_with_its_output,
    a_long_run_now_can_be_followed_from_another_replica,
);

/// A command that prints, then waits for the file `go` in its project before it ends.
const WAITS_FOR_GO: &str = "echo first; while [ ! -f go ]; do sleep 0.02; done; \
    for i in $(seq 1 300); do echo \"line $i\"; done; echo oops >&2; exit 3";

async fn enqueue(app: &TestApp, body: Value) -> String {
    let reply = app.post("/projects/hello/commands", &app.admin_key, body).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    reply.body["id"].as_str().unwrap().to_owned()
}

async fn follow(app: &TestApp, id: &str, last_event_id: Option<u64>) -> SseReader {
    let mut request = app.client.get(app.url(&format!("/commands/{id}/events"))).header("X-API-Key", &app.admin_key);
    if let Some(last) = last_event_id {
        request = request.header("Last-Event-ID", last.to_string());
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    SseReader::new(response)
}

async fn a_follower_on_another_replica_sees_the_output_live_and_the_replay_is_the_same(db: Db) {
    let runner = TestApp::on(db).await;
    // The follower's replica runs nothing: every chunk it shows came through the database.
    let follower = runner.replica(|config| config.queue.workers = 0).await;
    let id = enqueue(&runner, json!({"command": WAITS_FOR_GO, "max_output_bytes": 1024})).await;
    let mut live = follow(&follower, &id, None).await;
    // A follower that goes away stops nothing: the command below runs to its exit.
    let mut quitter = follow(&runner, &id, None).await;
    assert_eq!(quitter.next().await.unwrap().data, "first\n");
    drop(quitter);
    let first = live.next().await.unwrap();
    assert_eq!((first.id, first.event.as_str(), first.data.as_str()), (Some(1), "stdout", "first\n"));
    assert_eq!(runner.get(&format!("/commands/{id}"), &runner.admin_key).await.body["status"], "running");
    std::fs::write(runner.project_path("hello").join("go"), "").unwrap();
    let mut seen = vec![first];
    seen.extend(live.rest().await);

    let names: Vec<&str> = seen.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names.last(), Some(&"exit"));
    let gap = seen.iter().find(|e| e.event == "gap").expect("300 lines outgrow 1024 bytes");
    let gap: Value = serde_json::from_str(&gap.data).unwrap();
    assert_eq!((gap["stream"].as_str(), gap["offset"].as_u64()), (Some("stdout"), Some(512)));
    let exit: Value = serde_json::from_str(&seen.last().unwrap().data).unwrap();
    assert_eq!((exit["status"].as_str(), exit["exit_code"].as_i64()), (Some("failed"), Some(3)), "ran to its end");
    assert!(exit.get("stdout").is_none(), "the exit carries no output");
    let ids: Vec<u64> = seen.iter().map(|e| e.id.expect("every event has an id")).collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "1, 2, 3, … without a hole: {ids:?}");
    let stdout: String = seen.iter().filter(|e| e.event == "stdout").map(|e| e.data.as_str()).collect();
    assert!(stdout.starts_with("first\nline 1\n") && stdout.ends_with("line 300\n"), "head and tail: {stdout}");

    for on in [&runner, &follower] {
        assert_eq!(follow(on, &id, None).await.rest().await, seen, "the replay is what the live follower saw");
    }
}

async fn resuming_after_any_event_gives_exactly_the_rest(db: Db) {
    let app = TestApp::on(db).await;
    let command = "for i in 1 2 3 4 5; do echo out $i; echo err $i >&2; done";
    let id = enqueue(&app, json!({"command": command})).await;
    app.wait_for_command(&id, |c| c["status"] == "succeeded").await;
    let all = follow(&app, &id, None).await.rest().await;
    assert!(all.len() >= 3, "{all:?}");
    for (k, event) in all.iter().enumerate() {
        let after = event.id.unwrap();
        let rest = follow(&app, &id, Some(after)).await.rest().await;
        assert_eq!(rest, all[k + 1..], "after {after}");
    }
    // `?after=` does what the header does.
    let response =
        app.client.get(app.url(&format!("/commands/{id}/events?after=1"))).header("X-API-Key", &app.admin_key);
    let by_query = SseReader::new(response.send().await.unwrap()).rest().await;
    assert_eq!(by_query, all[1..]);
    let bad = app
        .send(
            app.client
                .get(app.url(&format!("/commands/{id}/events")))
                .header("X-API-Key", &app.admin_key)
                .header("Last-Event-ID", "yesterday"),
        )
        .await;
    assert_eq!((bad.status, bad.error_code()), (400, "VALIDATION_FAILED"));
    let unknown = app.get(&format!("/commands/{}/events", uuid::Uuid::new_v4()), &app.admin_key).await;
    assert_eq!(unknown.status, 404);
}

async fn the_kept_output_of_each_stream_is_readable_raw(db: Db) {
    let app = TestApp::on(db).await;
    let command = "head -c 5000 /dev/zero | tr '\\0' a; printf END; printf 'bin\\377' >&2";
    let id = enqueue(&app, json!({"command": command, "max_output_bytes": 1024})).await;
    app.wait_for_command(&id, |c| c["status"] == "succeeded").await;
    let read = |stream: &str| {
        let url = app.url(&format!("/commands/{id}/output?stream={stream}"));
        let request = app.client.get(url).header("X-API-Key", &app.admin_key);
        async move { request.send().await.unwrap() }
    };
    let stdout = read("stdout").await;
    assert_eq!(stdout.headers()["content-type"], "application/octet-stream");
    assert_eq!(stdout.headers()["rdev-output-complete"], "true");
    assert_eq!(stdout.headers()["rdev-output-omitted-bytes"], (5003 - 1024).to_string().as_str());
    let bytes = stdout.bytes().await.unwrap();
    assert_eq!(&bytes[..], format!("{}{}END", "a".repeat(512), "a".repeat(509)).as_bytes());
    let stderr = read("stderr").await;
    assert_eq!(stderr.headers()["rdev-output-omitted-bytes"], "0");
    assert_eq!(&stderr.bytes().await.unwrap()[..], b"bin\xff", "raw bytes, not lossy text");
    let bad = app.get(&format!("/commands/{id}/output?stream=both"), &app.admin_key).await;
    assert_eq!(bad.field_error("stream"), Some("must be stdout or stderr"));
}

async fn output_stored_before_its_replica_was_killed_stays_readable(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("projects/hello")).unwrap();
    let url = fresh_database(db, dir.path()).await;
    let admin = ApiKeySecret::generate().expose().to_owned();
    // A short lease: the survivor takes the command back (as lost) soon after the kill.
    let envs = [("DATABASE_URL", url.as_str()), ("RDEV_BOOTSTRAP_API_KEY", admin.as_str()), ("RDEV_QUEUE_LEASE", "1s")];
    let mut doomed = ServerProcess::start(dir.path(), &envs).await;
    // Past its head (512 bytes), so its tail is in memory until stored (once a second).
    let command = "echo stored before the kill; head -c 3000 /dev/zero | tr '\\0' t; printf END; sleep 300";
    let body = json!({"command": command, "max_output_bytes": 1024});
    let id = doomed.post_json("/projects/hello/commands", &admin, &body).await["id"].as_str().unwrap().to_owned();
    let client = crate::support::http_client();
    let output = |server: &ServerProcess| {
        let request = client.get(server.url(&format!("/commands/{id}/output"))).header("X-API-Key", &admin);
        async move {
            let response = request.send().await.unwrap();
            let omitted = response.headers()["rdev-output-omitted-bytes"].to_str().unwrap().to_owned();
            (response.text().await.unwrap(), omitted)
        }
    };
    let head = "stored before the kill\n";
    let expected = format!("{head}{}{}END", "t".repeat(512 - head.len()), "t".repeat(509));
    let omitted = (head.len() + 3003 - 1024).to_string();
    eventually("the head and the tail are stored", Duration::from_secs(10), async || {
        output(&doomed).await == (expected.clone(), omitted.clone())
    })
    .await;
    doomed.child.kill().await.unwrap();

    let survivor = ServerProcess::start(dir.path(), &envs).await;
    assert_eq!(output(&survivor).await, (expected, omitted), "the head, and the tail stored while it ran");
    let request = client.get(survivor.url(&format!("/commands/{id}/events"))).header("X-API-Key", &admin);
    let mut events = SseReader::new(request.send().await.unwrap());
    let first = events.next().await.unwrap();
    assert_eq!((first.id, first.event.as_str()), (Some(1), "stdout"));
    assert!(first.data.starts_with(head), "{first:?}");
    drop(events);

    // Once the survivor has taken it back, its replay ends with the stored tail, then its end.
    let status = || {
        let request = client.get(survivor.url(&format!("/commands/{id}"))).header("X-API-Key", &admin);
        async move { request.send().await.unwrap().json::<Value>().await.unwrap()["status"].clone() }
    };
    eventually("the lost command is taken back", Duration::from_secs(30), async || status().await == "failed").await;
    let request = client.get(survivor.url(&format!("/commands/{id}/events"))).header("X-API-Key", &admin);
    let replay = SseReader::new(request.send().await.unwrap()).rest().await;
    let names: Vec<&str> = replay.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(&names[names.len() - 3..], ["gap", "stdout", "exit"], "{names:?}");
    assert_eq!(replay[replay.len() - 2].data, format!("{}END", "t".repeat(509)));
    let ids: Vec<u64> = replay.iter().map(|e| e.id.unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
    let request = client.get(survivor.url(&format!("/commands/{id}/events"))).header("X-API-Key", &admin);
    let after_gap = ids[ids.len() - 3].to_string();
    let resumed = SseReader::new(request.header("Last-Event-ID", after_gap).send().await.unwrap()).rest().await;
    assert_eq!(resumed, replay[replay.len() - 2..], "resumed after the gap: the tail, then the end");
}

async fn a_run_now_is_a_command_with_its_output(db: Db) {
    let app = TestApp::on(db).await;
    let ran = app.shell("hello", json!({"command": "echo out; echo err >&2; printf 'nul\\0' ; exit 2"})).await;
    assert_eq!(ran.status, 200, "{}", ran.body);
    let id = ran.body["execution_id"].as_str().unwrap();
    let command = app.get(&format!("/commands/{id}"), &app.admin_key).await;
    assert_eq!(command.status, 200, "GET /commands/{{execution_id}} works after a sync run");
    let fields = ["origin", "status", "exit_code", "project_id", "attempts"].map(|f| command.body[f].clone());
    assert_eq!(fields, [json!("shell"), json!("failed"), json!(2), json!("hello"), json!(1)]);
    assert_eq!(command.body["stderr"], "err\n");
    assert_eq!(command.body["started_at"], ran.body["started_at"]);
    let output = app.client.get(app.url(&format!("/commands/{id}/output"))).header("X-API-Key", &app.admin_key);
    assert_eq!(&output.send().await.unwrap().bytes().await.unwrap()[..], b"out\nnul\0", "raw, NUL and all");
    let events = follow(&app, id, None).await.rest().await;
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert!(names.contains(&"stdout") && names.contains(&"stderr") && names.last() == Some(&"exit"), "{names:?}");
    let listed = app.get("/commands?project_id=hello", &app.admin_key).await;
    assert_eq!(listed.body["commands"][0]["id"], id);
    let cancel = app.post(&format!("/commands/{id}/cancel"), &app.admin_key, json!({})).await;
    assert_eq!(cancel.status, 409, "finished");
    let queued = enqueue(&app, json!({"command": "true"})).await;
    let queued = app.wait_for_command(&queued, |c| c["status"] == "succeeded").await;
    assert_eq!(queued["origin"], "queue");
}

async fn a_long_run_now_can_be_followed_from_another_replica(db: Db) {
    let app = TestApp::on(db).await;
    let other = app.replica(|config| config.queue.workers = 0).await;
    let run = app.shell("hello", json!({"command": WAITS_FOR_GO}));
    let follow_it = async {
        let running = eventually("the run is stored while it runs", Duration::from_secs(10), async || {
            let listed = other.get("/commands?project_id=hello&status=running", &other.admin_key).await;
            listed.body["commands"].as_array().is_some_and(|c| !c.is_empty())
        });
        running.await;
        let listed = other.get("/commands?project_id=hello&status=running", &other.admin_key).await;
        let id = listed.body["commands"][0]["id"].as_str().unwrap().to_owned();
        assert_eq!(listed.body["commands"][0]["origin"], "shell");
        let cancel = other.post(&format!("/commands/{id}/cancel"), &other.admin_key, json!({})).await;
        assert_eq!((cancel.status, cancel.error_code()), (409, "CONFLICT"), "its request holds it");
        let mut events = follow(&other, &id, None).await;
        assert_eq!(events.next().await.unwrap().data, "first\n", "live, from the other replica");
        std::fs::write(app.project_path("hello").join("go"), "").unwrap();
        (id, events.rest().await)
    };
    let (ran, (id, rest)) = tokio::join!(run, follow_it);
    assert_eq!(ran.status, 200, "{}", ran.body);
    assert_eq!(ran.body["execution_id"], id.as_str());
    let exit: Value = serde_json::from_str(&rest.last().unwrap().data).unwrap();
    assert_eq!((exit["status"].as_str(), exit["exit_code"].as_i64()), (Some("failed"), Some(3)));
    let replay = follow(&app, &id, None).await.rest().await;
    assert_eq!(&replay[1..], &rest[..], "the replay is what the follower saw");
}
