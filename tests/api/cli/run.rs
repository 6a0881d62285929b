//! `rdev run`, `rdev logs` and `rdev ps`: exit codes, streams kept apart, Ctrl-C, following
//! across a cut connection.

use std::{process::Stdio, time::Duration};

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use super::Rdev;
use crate::support::{Db, TestApp, proxy::TcpProxy, survivors_of};

#[tokio::test]
async fn run_answers_the_commands_exit_code_and_keeps_stdout_and_stderr_apart() {
    let app = TestApp::on(Db::Sqlite).await;
    let rdev = Rdev::for_app(&app);

    let ran = rdev.run(&["run", "hello", "--", "echo out; echo err >&2"]).await;
    assert_eq!((ran.code, ran.stdout.as_str(), ran.stderr.as_str()), (Some(0), "out\n", "err\n"), "{ran:?}");
    // The words are joined as ssh joins them, and the shell sees them.
    let ran = rdev.run(&["run", "hello", "--", "printf", "%s-%s", "a", "b;", "exit", "3"]).await;
    assert_eq!((ran.code, ran.stdout.as_str()), (Some(3), "a-b"), "{ran:?}");
    let ran = rdev.run(&["run", "hello", "--timeout", "1", "--", "echo before; sleep 30"]).await;
    assert_eq!((ran.code, ran.stdout.as_str()), (Some(124), "before\n"), "{ran:?}");
    assert!(ran.stderr.contains("ran out of time"), "{ran:?}");

    // Input, variables and a folder reach it.
    let mut child = rdev.command(&[
        "run",
        "hello",
        "--stdin",
        "-e",
        "WHO=you",
        "-w",
        "src",
        "--",
        "echo $WHO; basename $PWD; wc -c",
    ]);
    let mut child = child.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    tokio::io::AsyncWriteExt::write_all(child.stdin.as_mut().unwrap(), b"12345").await.unwrap();
    drop(child.stdin.take());
    let output = child.wait_with_output().await.unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "you\nsrc\n5\n");

    // Refusals are one line with the API's code, and exit 1.
    let ran = rdev.run(&["run", "nowhere", "--", "true"]).await;
    assert_eq!((ran.code, ran.stderr.as_str()), (Some(1), "rdev: NOT_FOUND: project not found\n"), "{ran:?}");
    let (_, reader) = app.create_key(&["projects:read"]).await;
    let ran = Rdev::at(&rdev.url, &reader).run(&["run", "hello", "--", "true"]).await;
    assert_eq!(ran.code, Some(1));
    assert!(ran.stderr.starts_with("rdev: FORBIDDEN: "), "{ran:?}");

    // -d queues it; logs -f follows it to its exit code; ps lists it.
    let queued = rdev.run(&["run", "-d", "hello", "--", "echo queued; exit 4"]).await;
    let id = queued.stdout.trim().to_owned();
    assert_eq!(queued.code, Some(0), "{queued:?}");
    let followed = rdev.run(&["logs", "-f", &id]).await;
    assert_eq!((followed.code, followed.stdout.as_str()), (Some(4), "queued\n"), "{followed:?}");
    let replayed = rdev.run(&["logs", &id]).await;
    assert_eq!((replayed.code, replayed.stdout.as_str()), (Some(0), "queued\n"), "{replayed:?}");
    let listed = rdev.run(&["ps", "hello", "--output", "json"]).await;
    let listed: serde_json::Value = serde_json::from_str(&listed.stdout).expect("JSON");
    assert!(listed.as_array().unwrap().iter().any(|command| command["id"] == id.as_str()), "{listed}");
    let table = rdev.run(&["ps"]).await;
    assert!(table.stdout.starts_with("ID ") && table.stdout.contains("echo queued; exit 4"), "{table:?}");
}

#[tokio::test]
async fn ctrl_c_cancels_the_command_and_leaves_nothing_running() {
    let app = TestApp::on(Db::Sqlite).await;
    let rdev = Rdev::for_app(&app);
    let marker = format!("rdev-cli-ctrl-c-{}", uuid::Uuid::new_v4().simple());
    let script = format!("echo started; sleep 600 # {marker}");
    let mut child = rdev.command(&["run", "hello", "--", &script]).stdout(Stdio::piped()).spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).await.unwrap();
    assert_eq!(line, "started\n");
    assert!(!crate::support::live_processes_with(&marker).is_empty(), "the command runs");

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id().unwrap() as i32), nix::sys::signal::Signal::SIGINT)
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.expect("rdev ends").unwrap();
    assert_eq!(status.code(), Some(130));
    assert_eq!(survivors_of(&marker).await, Vec::<u32>::new(), "nothing of the command is left");
    // A short /shell run is stored when it ends, which the server does after rdev has gone.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let command = loop {
        let commands = app.get("/commands?project_id=hello", &app.admin_key).await;
        if let Some(command) = commands.body["commands"].as_array().and_then(|list| list.first()).cloned()
            && command["status"] != "running"
        {
            break command;
        }
        assert!(tokio::time::Instant::now() < deadline, "the command never ended: {}", commands.body);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(command["status"], "cancelled", "{command}");
}

#[tokio::test]
async fn logs_follow_resumes_after_a_cut_connection_without_a_duplicate_or_a_hole() {
    let app = TestApp::on(Db::Sqlite).await;
    let proxy = TcpProxy::start(app.addr).await;
    let rdev = Rdev::at(&format!("http://{}", proxy.addr), &app.admin_key);
    // Five lines, then five more once the test says go: the cut comes between them.
    let script = "for i in 1 2 3 4 5; do echo line-$i; done; until [ -e go ]; do sleep 0.05; done; \
                  for i in 6 7 8 9 10; do echo line-$i; sleep 0.05; done; exit 7";
    let queued = app.post("/projects/hello/commands", &app.admin_key, json!({"command": script})).await;
    let id = queued.body["id"].as_str().unwrap().to_owned();

    let mut child = rdev.command(&["logs", "-f", &id]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("line-5\n") {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).await.unwrap() > 0, "output ended early: {seen:?}");
        seen.push_str(&line);
    }
    proxy.cut();
    std::fs::write(app.project_path("hello").join("go"), "").unwrap();
    app.wait_for_command(&id, |command| command["status"] == "failed").await;
    proxy.restore();

    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await.expect("rdev ends").unwrap();
    stdout.read_to_string(&mut seen).await.unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).await.unwrap();
    let expected: String = (1..=10).map(|i| format!("line-{i}\n")).collect();
    assert_eq!(seen, expected, "exactly the output, once: {stderr}");
    assert_eq!(status.code(), Some(7));
    assert!(stderr.contains("lost the connection; resuming after event"), "{stderr}");
}
