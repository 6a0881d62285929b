//! Nothing a command starts survives it: not with `setsid`, a double fork, `nohup` or a daemon,
//! whether the shell exits, runs out of time, is cancelled, loses its client, or the server
//! itself is killed. Checked in `/proc`, by the unique durations each test's sleeps carry.

use std::time::{Duration, Instant};

use rdev_api::domain::ApiKeySecret;
use serde_json::json;

use crate::support::{Db, TestApp, fresh_database, live_processes_with, process::ServerProcess};

/// Unique sleep durations for one test, so its processes can be told apart from others'.
fn markers() -> Vec<String> {
    let base = uuid::Uuid::new_v4().as_u128() % 900_000 + 100_000;
    (0..5).map(|n| format!("30{n}.{base}")).collect()
}

/// A command that leaves a process behind in every way a shell can.
fn escaping(m: &[String]) -> String {
    format!(
        "setsid sleep {} & (setsid sh -c 'sleep {}' &); nohup sleep {} >/dev/null 2>&1 & \
         start-stop-daemon --start --background --make-pidfile --pidfile /tmp/daemon.pid --exec /bin/sleep -- {}; \
         /usr/bin/python3 -c 'import os,time; os.fork() and os._exit(0); os.setsid(); os.fork() and os._exit(0); time.sleep({})' & \
         sleep 0.3",
        m[0], m[1], m[2], m[3], m[4]
    )
}

fn left_behind(markers: &[String]) -> Vec<u32> {
    markers.iter().flat_map(|m| live_processes_with(m)).collect()
}

/// Waits until every process of the command is visible (it really did start them).
async fn started(markers: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while markers.iter().any(|m| live_processes_with(m).is_empty()) {
        assert!(Instant::now() < deadline, "the command never started all of its processes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `/proc` for up to 5 s until none of `markers` runs.
async fn none_within_5s(markers: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = left_behind(markers);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "still running 5 s later: {left:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_comes_when_the_shell_exits_and_takes_everything_with_it() {
    let app = TestApp::on(Db::Sqlite).await;
    let m = markers();
    let command = format!("{}; echo done", escaping(&m));
    let reply = app.shell("hello", json!({"command": command, "timeout_secs": 60})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!((reply.body["exit_code"].as_i64(), reply.body["timed_out"].as_bool()), (Some(0), Some(false)));
    assert_eq!(reply.body["stdout"], "done\n");
    assert!(reply.body["duration_ms"].as_u64().unwrap() < 10_000, "not held for the timeout: {}", reply.body);
    assert_eq!(left_behind(&m), Vec::<u32>::new(), "gone before the answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_takes_everything_with_it() {
    let app = TestApp::on(Db::Sqlite).await;
    let m = markers();
    let command = format!("{}; sleep 100", escaping(&m));
    let reply = app.shell("hello", json!({"command": command, "timeout_secs": 2})).await;
    assert_eq!(reply.body["timed_out"], true, "{}", reply.body);
    assert_eq!(left_behind(&m), Vec::<u32>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_client_going_away_takes_everything_with_it() {
    let app = TestApp::on(Db::Sqlite).await;
    let m = markers();
    let command = format!("{}; echo ready; sleep 100", escaping(&m));
    let mut response = app
        .client
        .post(app.url("/projects/hello/shell"))
        .header("X-API-Key", &app.admin_key)
        .header("Accept", "text/event-stream")
        .json(&json!({"command": command}))
        .send()
        .await
        .unwrap();
    let mut seen = String::new();
    while !seen.contains("ready") {
        seen.push_str(&String::from_utf8_lossy(&response.chunk().await.unwrap().expect("more output")));
    }
    started(&m).await;
    drop(response);
    none_within_5s(&m).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_queued_command_takes_everything_with_it() {
    let app = TestApp::on(Db::Sqlite).await;
    let m = markers();
    let command = format!("{}; sleep 100", escaping(&m));
    let queued = app.post("/projects/hello/commands", &app.admin_key, json!({"command": command})).await;
    let id = queued.body["id"].as_str().unwrap().to_owned();
    started(&m).await;
    let cancelled = app.post(&format!("/commands/{id}/cancel"), &app.admin_key, json!({})).await;
    assert_eq!(cancelled.body["status"], "cancelled", "{}", cancelled.body);
    none_within_5s(&m).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_server_takes_every_command_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database(Db::Sqlite, dir.path()).await;
    let admin = ApiKeySecret::generate().expose().to_owned();
    let mut server =
        ServerProcess::start(dir.path(), &[("DATABASE_URL", url.as_str()), ("RDEV_BOOTSTRAP_API_KEY", admin.as_str())])
            .await;
    let (queued, now) = (markers(), markers());
    let client = crate::support::http_client();
    let enqueue = json!({"command": format!("{}; sleep 100", escaping(&queued)), "max_attempts": 2});
    client
        .post(server.url("/projects/hello/commands"))
        .header("X-API-Key", &admin)
        .json(&enqueue)
        .send()
        .await
        .unwrap();
    let shell = client
        .post(server.url("/projects/hello/shell"))
        .header("X-API-Key", &admin)
        .json(&json!({"command": format!("{}; sleep 100", escaping(&now))}))
        .send();
    let in_flight = tokio::spawn(shell);
    started(&queued).await;
    started(&now).await;
    server.child.start_kill().unwrap();
    server.child.wait().await.unwrap();
    none_within_5s(&queued).await;
    none_within_5s(&now).await;
    assert!(in_flight.await.unwrap().is_err(), "the request died with the server");
}
