//! The real `rdev-api` binary, started as a newcomer would: empty folder, no settings but a port.

use serde_json::json;

use crate::support::process::{BIN, ServerProcess};

/// Starts `rdev-api` in an empty `dir` as a newcomer would; returns it with the key it printed.
async fn start_fresh(dir: &std::path::Path) -> (ServerProcess, String) {
    let server = ServerProcess::start(dir, &[]).await;
    let line = server.wait_for_line("X-API-Key: rdev_").await;
    let (_, rest) = line.split_once("X-API-Key: ").expect("the banner shows the key");
    let key = rest.split('"').next().unwrap_or_default().to_owned();
    (server, key)
}

#[tokio::test]
async fn fresh_start_serves_hello_with_the_printed_key_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, key) = start_fresh(dir.path()).await;
    assert!(dir.path().join("rdev.db").exists(), "SQLite file created");
    assert!(dir.path().join("projects/hello").is_dir(), "example project created");

    let projects = server.get_json("/projects", &key).await;
    assert_eq!(projects["projects"][0]["id"], "hello");
    let run = server.post_json("/projects/hello/shell", &key, &json!({"command": "echo hello"})).await;
    assert_eq!((run["exit_code"].as_i64(), run["stdout"].as_str()), (Some(0), Some("hello\n")));

    let status = server.terminate().await;
    assert!(status.success(), "exits 0 on SIGTERM: {status}");

    // A second start on the same folder keeps the key and prints none.
    let mut again = ServerProcess::start(dir.path(), &[]).await;
    assert!(again.terminate().await.success());
    let output = again.output();
    assert!(
        !output.contains("X-API-Key: rdev_") && !output.contains("admin API key"),
        "no key on a later start: {output}"
    );
}

#[tokio::test]
async fn migrate_and_keys_create_work_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(BIN).args(args).current_dir(dir.path()).env_clear().output().expect("runs")
    };
    let migrate = run(&["migrate"]);
    assert!(migrate.status.success(), "{}", String::from_utf8_lossy(&migrate.stderr));
    let created =
        run(&["keys", "create", "--name", "ci", "--scopes", "projects:read,commands:execute", "--expires-in", "30d"]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let secret = String::from_utf8(created.stdout).unwrap();
    assert!(secret.trim().starts_with("rdev_"), "{secret}");
    let bad = run(&["keys", "create", "--name", "x", "--scopes", "projects:write"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown scope"));
}

/// A key, in either header, and a terminal's ticket reach no log line or span, even with every
/// target at `trace`: the headers are marked sensitive, and no span or log records a query.
#[tokio::test]
async fn secrets_stay_out_of_the_logs_even_at_trace() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path(), &[("RUST_LOG", "trace")]).await;
    let line = server.wait_for_line("X-API-Key: rdev_").await;
    let key = line.split("X-API-Key: ").nth(1).and_then(|rest| rest.split('"').next()).unwrap().to_owned();
    let client = crate::support::http_client();
    let listed = client.get(server.url("/projects")).header("X-API-Key", &key).send().await.unwrap();
    assert_eq!(listed.status(), 200);
    let bearer = client.get(server.url("/projects")).header("Authorization", format!("Bearer {key}")).send().await;
    assert!(bearer.is_ok());
    // /mcp takes the key as a bearer token and hands it on to the route a tool calls.
    let mcp = client
        .post(server.url("/mcp"))
        .header("Authorization", format!("Bearer {key}"))
        .header("Accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "list_projects", "arguments": {}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(mcp.status(), 200);
    assert!(mcp.text().await.unwrap().contains("hello"));
    let ticket = server.post_json("/projects/hello/terminal/tickets", &key, &json!({})).await;
    let ticket = ticket["ticket"].as_str().expect("a ticket").to_owned();
    // Not an upgrade: refused, but the ticket went by in the request line.
    let _ = client.get(server.url(&format!("/projects/hello/terminal?ticket={ticket}"))).send().await.unwrap();
    assert!(server.terminate().await.success());
    let output = server.output();
    assert!(output.contains("DEBUG"), "verbose logging is on");
    // The start banner shows the new key (twice) on purpose; nothing after it may.
    let logged: Vec<&str> = output
        .lines()
        .filter(|line| !line.contains("rdev-api created") && line.trim() != key && !line.contains("curl -H"))
        .collect();
    assert!(logged.len() > 20, "{output}");
    let secret = key.trim_start_matches("rdev_");
    assert!(!logged.iter().any(|line| line.contains(secret)), "the key is in the logs");
    assert!(!output.contains(&ticket), "the ticket is in the logs");
}

#[test]
fn help_shows_what_each_command_takes() {
    let help = |args: &[&str]| {
        let output = std::process::Command::new(BIN).args(args).env_clear().output().expect("runs");
        assert!(output.status.success(), "{args:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let server = help(&["--help"]);
    // A fresh server holds a new admin key: it listens on loopback unless told otherwise.
    assert!(server.contains("[default: 127.0.0.1:8080]"), "{server}");
    for args in [&["keys", "--help"][..], &["keys", "create", "--help"], &["migrate", "--help"]] {
        let text = help(args);
        assert!(text.lines().count() < 40, "{args:?} shows only what it takes:\n{text}");
        assert!(text.contains("--database-url") && !text.contains("--listen"), "{args:?}:\n{text}");
    }
    let create = help(&["keys", "create", "--help"]);
    let name = create.split("      --name <NAME>").nth(1).and_then(|rest| rest.lines().nth(1)).unwrap_or_default();
    assert!(name.contains("What the key is for"), "--name is described:\n{create}");
    // Hidden from the help, the settings still apply.
    let dir = tempfile::tempdir().unwrap();
    let migrate = std::process::Command::new(BIN)
        .args(["migrate", "--log-format", "json", "--database-url", "sqlite://other.db"])
        .current_dir(dir.path())
        .env_clear()
        .output()
        .expect("runs");
    assert!(migrate.status.success(), "{}", String::from_utf8_lossy(&migrate.stderr));
    assert!(dir.path().join("other.db").exists());
}

#[tokio::test]
async fn bad_settings_stop_the_start_with_a_message_naming_them() {
    let cases: [(&str, &str, &str); 4] = [
        ("RDEV_COMMAND_TIMEOUT", "2h", "RDEV_COMMAND_TIMEOUT"),
        ("RDEV_COMMAND_TIMEOUT", "soon", "RDEV_COMMAND_TIMEOUT"),
        ("DATABASE_URL", "mysql://x", "DATABASE_URL"),
        ("RDEV_BOOTSTRAP_API_KEY", "hunter2", "RDEV_BOOTSTRAP_API_KEY"),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (name, value, expected) in cases {
        let output = std::process::Command::new(BIN)
            .current_dir(dir.path())
            .env_clear()
            .env("RDEV_LISTEN", "127.0.0.1:0")
            .env(name, value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{name}={value} is refused");
        assert!(
            stderr.contains(expected)
                || stderr.contains(&format!("--{}", name.to_lowercase().replace('_', "-").trim_start_matches("rdev-"))),
            "{name}={value}: {stderr}"
        );
        assert!(!stderr.contains("hunter2"), "the bad secret is not echoed");
    }
}

/// The peak resident size of process `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Output past the budget is read and dropped, never held: a command printing 1 GiB leaves the
/// server as small as it was, with the head and tail of what it printed.
#[tokio::test]
async fn a_gibibyte_of_output_keeps_the_server_under_64_mib() {
    let dir = tempfile::tempdir().unwrap();
    let (server, key) = start_fresh(dir.path()).await;
    let before = peak_rss_kib(server.pid());
    let command = "head -c 1073741824 /dev/zero | tr '\\0' x";
    let run = server.post_json("/projects/hello/shell", &key, &json!({"command": command, "timeout_secs": 600})).await;
    assert_eq!(run["exit_code"], 0, "{run}");
    assert_eq!(run["stdout_omitted"], json!({"offset": 512 * 1024, "bytes": (1u64 << 30) - (1 << 20)}));
    let after = peak_rss_kib(server.pid());
    println!("server peak RSS: {before} KiB before, {after} KiB after 1 GiB of output");
    assert!(after < 64 * 1024, "peak RSS {after} KiB");
}
