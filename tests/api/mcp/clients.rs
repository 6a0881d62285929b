//! Every tool through the Python SDK and through the Inspector's CLI; calls alternating between
//! two replicas.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::{io::copy_bidirectional, net::TcpListener, net::TcpStream};

use super::{mcp_dir, python, rpc, url_of};
use crate::support::{Db, TestApp};

/// A key that may read files but not write them (and run and read commands).
const READER: &[&str] = &["projects:read", "commands:execute", "commands:read", "files:read"];

async fn run_python(args: &[&str]) {
    let output = tokio::process::Command::new(python())
        .arg(mcp_dir().join("client.py"))
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the Python SDK's session failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

#[tokio::test]
async fn the_python_sdk_uses_every_tool() {
    let app = TestApp::on(Db::Sqlite).await;
    let (_, reader) = app.create_key(READER).await;
    run_python(&[&url_of(&app), &app.admin_key, &reader]).await;
}

/// The Inspector's CLI, as a person runs it; its JSON answer.
async fn inspect(app: &TestApp, key: &str, home: &std::path::Path, args: &[&str]) -> Value {
    let inspector = mcp_dir().join("node_modules/.bin/mcp-inspector");
    assert!(inspector.exists(), "{} is missing: run scripts/ensure-mcp-clients", inspector.display());
    let authorization = format!("Authorization: Bearer {key}");
    let output = tokio::process::Command::new(inspector)
        .args(["--cli", &url_of(app), "--transport", "http", "--header", &authorization, "--format", "json"])
        .args(args)
        .env("HOME", home)
        .kill_on_drop(true)
        .output()
        .await
        .expect("the inspector runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    // A tool error is still a result (the CLI then exits non-zero); anything else is a failure.
    let printed: Value = serde_json::from_str(&stdout).unwrap_or_default();
    assert!(
        printed.get("result").is_some(),
        "inspector {args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    printed["result"].clone()
}

async fn inspect_call(app: &TestApp, home: &std::path::Path, tool: &str, arguments: Value) -> Value {
    let arguments = arguments.to_string();
    inspect(app, &app.admin_key, home, &["--method", "tools/call", "--tool-name", tool, "--tool-args-json", &arguments])
        .await
}

#[tokio::test]
async fn the_inspector_cli_uses_every_tool() {
    let app = TestApp::on(Db::Sqlite).await;
    let home = tempfile::tempdir().unwrap();
    let (_, reader) = app.create_key(READER).await;
    let names = |listed: &Value| -> Vec<String> {
        listed["tools"].as_array().unwrap().iter().map(|tool| tool["name"].as_str().unwrap().to_owned()).collect()
    };
    let all = names(&inspect(&app, &app.admin_key, home.path(), &["--method", "tools/list"]).await);
    assert_eq!(all.len(), 11, "{all:?}");
    assert!(all.contains(&"write_file".to_owned()) && all.contains(&"delete_file".to_owned()));
    let some = names(&inspect(&app, &reader, home.path(), &["--method", "tools/list"]).await);
    assert!(some.contains(&"read_file".to_owned()) && !some.contains(&"write_file".to_owned()), "{some:?}");

    let ran =
        inspect_call(&app, home.path(), "run_command", json!({"project": "hello", "command": "echo hi; exit 3"})).await;
    assert_eq!(
        (ran["structuredContent"]["exit_code"].as_i64(), ran["structuredContent"]["stdout"].as_str()),
        (Some(3), Some("hi\n")),
        "{ran}"
    );

    let big = inspect_call(
        &app,
        home.path(),
        "run_command",
        json!({"project": "hello", "command": "yes 0123456789abcde | head -c 10485760"}),
    )
    .await;
    let out = &big["structuredContent"];
    assert_eq!(out["stdout"].as_str().map(str::len), Some(16384), "{}", out["stdout_omitted"]);
    assert_eq!(out["stdout_tail"].as_str().map(str::len), Some(16384));
    assert_eq!(out["stdout_omitted"]["bytes"], 10485760 - 32768);

    let every_byte: Vec<u8> = (0..=255).collect();
    let content = base64::engine::general_purpose::STANDARD.encode(&every_byte);
    let written = inspect_call(
        &app,
        home.path(),
        "write_file",
        json!({"project": "hello", "path": "b.bin", "content": content, "encoding": "base64"}),
    )
    .await;
    let etag = written["structuredContent"]["etag"].as_str().unwrap().to_owned();
    let read = inspect_call(&app, home.path(), "read_file", json!({"project": "hello", "path": "b.bin"})).await;
    let read_back = base64::engine::general_purpose::STANDARD
        .decode(read["structuredContent"]["content"].as_str().unwrap())
        .unwrap();
    assert_eq!(read_back, every_byte);
    std::fs::write(app.project_path("hello").join("b.bin"), "changed\n").unwrap();
    let stale = inspect_call(
        &app,
        home.path(),
        "write_file",
        json!({"project": "hello", "path": "b.bin", "content": "mine", "if_match": etag}),
    )
    .await;
    assert_eq!(stale["isError"], true, "{stale}");
    assert_eq!(stale["structuredContent"]["error"]["code"], "PRECONDITION_FAILED");
    assert_eq!(std::fs::read_to_string(app.project_path("hello").join("b.bin")).unwrap(), "changed\n");

    let session = inspect_call(&app, home.path(), "create_session", json!({"project": "hello"})).await;
    let id = session["structuredContent"]["id"].as_str().unwrap().to_owned();
    inspect_call(&app, home.path(), "run_in_session", json!({"session_id": id, "command": "cd src"})).await;
    let pwd = inspect_call(&app, home.path(), "run_in_session", json!({"session_id": id, "command": "pwd"})).await;
    assert!(pwd["structuredContent"]["stdout"].as_str().unwrap().trim_end().ends_with("/hello/src"), "{pwd}");
}

/// Forwards each new connection to the next of `targets` in turn, counting them.
async fn round_robin(targets: Vec<SocketAddr>) -> (SocketAddr, Arc<Vec<AtomicUsize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counts: Arc<Vec<AtomicUsize>> = Arc::new(targets.iter().map(|_| AtomicUsize::new(0)).collect());
    let counted = counts.clone();
    tokio::spawn(async move {
        let mut next = 0;
        while let Ok((mut client, _)) = listener.accept().await {
            let index = next % targets.len();
            next += 1;
            counted[index].fetch_add(1, Ordering::SeqCst);
            let target = targets[index];
            tokio::spawn(async move {
                if let Ok(mut server) = TcpStream::connect(target).await {
                    let _ = copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    (addr, counts)
}

/// How long a replica may still believe in a revoked key.
const CACHE_TTL: Duration = Duration::from_secs(2);

#[tokio::test]
async fn calls_alternate_between_two_replicas_and_a_key_revoked_on_one_is_refused_on_the_other() {
    let first = TestApp::on(Db::Postgres).configure(|c| c.access.cache_ttl = CACHE_TTL).await;
    let second = first.replica(|c| c.access.cache_ttl = CACHE_TTL).await;
    let (addr, counts) = round_robin(vec![first.addr, second.addr]).await;
    run_python(&["--calls", "6", &format!("http://{addr}/mcp"), &first.admin_key]).await;
    let (a, b) = (counts[0].load(Ordering::SeqCst), counts[1].load(Ordering::SeqCst));
    assert!(a >= 6 && b >= 6, "each replica served its share of the connections: {a} and {b}");

    // A key known to the second replica, revoked on the first.
    let (id, key) = first.create_key(&["admin"]).await;
    let bearer = format!("Bearer {key}");
    let (status, ..) = rpc(&url_of(&second), &[("Authorization", &bearer)], "tools/list", json!({})).await;
    assert_eq!(status, 200);
    let revoked = first
        .send(first.client.delete(first.url(&format!("/api-keys/{id}"))).header("X-API-Key", &first.admin_key))
        .await;
    assert_eq!(revoked.status, 204);
    let since = Instant::now();
    loop {
        let (status, ..) = rpc(&url_of(&second), &[("Authorization", &bearer)], "tools/list", json!({})).await;
        if status == 401 {
            break;
        }
        assert!(
            since.elapsed() <= CACHE_TTL + Duration::from_secs(1),
            "still served {:?} after the revocation",
            since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("/mcp on the other replica refused the revoked key after {:?}", since.elapsed());
}
