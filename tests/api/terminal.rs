//! The terminal's WebSocket on every backend (local on SQLite and Postgres, fake Kubernetes):
//! keystrokes in, terminal output out, resizes, the exit frame, tickets (single use, one
//! project, one key), scopes, and nothing left running after an abrupt close.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{self, Message, client::IntoClientRequest},
};

use crate::{
    on_every_backend,
    support::{Backend, TestApp, live_processes_with, survivors_of},
};

on_every_backend!(
    keystrokes_reach_the_shell_and_its_output_comes_back,
    a_resize_reaches_the_terminal,
    exit_ends_with_the_exit_frame_and_is_audited,
    tickets_work_once_for_one_project,
    a_key_without_terminal_open_is_refused,
    an_abrupt_close_leaves_nothing_running,
);

on_every_backend!(
    the_allowlist_and_the_rate_limit_apply_at_the_upgrade,
    an_idle_terminal_ends,
    a_client_that_stops_reading_is_idle_too,
    project_files_never_become_shell_code_or_keep_history
);

/// How long any expected output may take (a bound for a hang, not a timing goal).
const PATIENCE: Duration = Duration::from_secs(15);

pub struct Term {
    socket: WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>,
    /// Every terminal byte received so far.
    pub seen: Vec<u8>,
    /// The exit frame's status, once it came.
    pub exit_code: Option<i64>,
    /// The exit frame's `reason`, when the server ended the terminal.
    pub exit_reason: Option<String>,
    /// The close frame's reason, once it came.
    pub close_reason: Option<String>,
}

impl std::fmt::Debug for Term {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Term {{ seen: {:?} }}", String::from_utf8_lossy(&self.seen))
    }
}

/// A refused upgrade: its status and JSON body.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: Value,
}

impl Term {
    /// Opens `/projects/{project}/terminal?{query}`, with `key` as `X-API-Key` when given.
    pub async fn open(app: &TestApp, project: &str, query: &str, key: Option<&str>) -> Result<Self, Refused> {
        Self::open_at(&app.addr.to_string(), project, query, key).await
    }

    /// `open`, on the server at `addr` (`host:port`).
    pub async fn open_at(addr: &str, project: &str, query: &str, key: Option<&str>) -> Result<Self, Refused> {
        let url = format!("ws://{addr}/projects/{project}/terminal?{query}");
        let mut request = url.into_client_request().unwrap();
        if let Some(key) = key {
            request.headers_mut().insert("x-api-key", key.parse().unwrap());
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _)) => {
                Ok(Self { socket, seen: Vec::new(), exit_code: None, exit_reason: None, close_reason: None })
            }
            Err(tungstenite::Error::Http(response)) => {
                let body = response.body().as_deref().map(serde_json::from_slice).transpose().unwrap_or_default();
                Err(Refused { status: response.status().as_u16(), body: body.unwrap_or(Value::Null) })
            }
            Err(error) => panic!("connecting the terminal: {error}"),
        }
    }

    pub async fn keys(&mut self, text: &str) {
        self.socket.send(Message::binary(text.as_bytes().to_vec())).await.unwrap();
    }

    async fn text(&mut self, frame: Value) {
        self.socket.send(Message::text(frame.to_string())).await.unwrap();
    }

    /// Reads until the output holds `needle` (after what was seen before), or the socket ends.
    pub async fn until(&mut self, needle: &str) -> String {
        let from = self.seen.len();
        let needle_bytes = needle.as_bytes();
        // Only what arrived since the last look (and a needle's length before it) is searched,
        // so megabytes of output cost one pass.
        let mut searched = from;
        let found = tokio::time::timeout(PATIENCE, async {
            loop {
                let start = searched.saturating_sub(needle_bytes.len()).max(from);
                if self.seen[start..].windows(needle_bytes.len()).any(|window| window == needle_bytes) {
                    return true;
                }
                searched = self.seen.len();
                if !self.next().await {
                    return false;
                }
            }
        })
        .await;
        let text = String::from_utf8_lossy(&self.seen[from..]).into_owned();
        let tail: String = text.chars().skip(text.chars().count().saturating_sub(2000)).collect();
        assert!(matches!(found, Ok(true)), "never saw {needle:?}; saw {tail:?}");
        text
    }

    /// Reads to the close; returns the exit frame's status.
    pub async fn read_to_close(&mut self) -> Option<i64> {
        tokio::time::timeout(PATIENCE, async { while self.next().await {} }).await.expect("the terminal never closed");
        self.exit_code
    }

    /// One frame in; `false` once the socket is closed.
    async fn next(&mut self) -> bool {
        match self.socket.next().await {
            Some(Ok(Message::Binary(bytes))) => self.seen.extend_from_slice(&bytes),
            Some(Ok(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(text.as_str()).unwrap();
                match frame["type"].as_str() {
                    Some("exit") => {
                        self.exit_code = frame["exit_code"].as_i64();
                        self.exit_reason = frame["reason"].as_str().map(str::to_owned);
                    }
                    _ => panic!("unexpected text frame {frame}"),
                }
            }
            Some(Ok(Message::Close(frame))) => {
                self.close_reason = frame.map(|frame| frame.reason.to_string());
                return false;
            }
            None | Some(Err(_)) => return false,
            Some(Ok(_)) => {}
        }
        true
    }
}

fn marker() -> String {
    format!("600.{}", uuid::Uuid::new_v4().as_u128() as u32 % 1_000_000)
}

async fn keystrokes_reach_the_shell_and_its_output_comes_back(backend: Backend) {
    let app = TestApp::on(backend).await;
    let mut term = Term::open(&app, "hello", "", Some(&app.admin_key)).await.unwrap();
    term.keys("echo $((6*7))\r").await;
    // The terminal echoes the keystrokes, then the shell prints the result on its own line.
    term.until("\r42\r\n").await;
    term.keys("echo \"$TERM\"; tty\r").await;
    let seen = term.until("/dev/pts/").await;
    assert!(seen.contains("xterm-256color"), "{seen:?}");
}

async fn a_resize_reaches_the_terminal(backend: Backend) {
    let app = TestApp::on(backend).await;
    let mut term = Term::open(&app, "hello", "cols=100&rows=30", Some(&app.admin_key)).await.unwrap();
    // The first size is the query's (on Kubernetes it follows on the resize channel).
    term.keys("until [ \"$(stty size)\" = '30 100' ]; do sleep 0.01; done; echo first-$((1+1))\r").await;
    term.until("first-2").await;
    term.text(json!({"type": "resize", "cols": 132, "rows": 43})).await;
    term.keys("until [ \"$(stty size)\" = '43 132' ]; do sleep 0.01; done; stty size\r").await;
    term.until("\r43 132\r\n").await;
}

async fn exit_ends_with_the_exit_frame_and_is_audited(backend: Backend) {
    let app = TestApp::on(backend).await;
    let mut term = Term::open(&app, "hello", "", Some(&app.admin_key)).await.unwrap();
    term.keys("exit 3\r").await;
    assert_eq!(term.read_to_close().await, Some(3));
    let audit = app.get("/audit?project_id=hello", &app.admin_key).await;
    let entries = audit.body["entries"].as_array().unwrap();
    let ended = &entries[0];
    let text = ended["command"].as_str().unwrap();
    assert!(text.starts_with("terminal ended: shell exited with 3;"), "{ended}");
    assert!(text.contains("bytes in") && text.contains("bytes out"), "{ended}");
    assert_eq!((ended["exit_code"].as_i64(), ended["outcome"].as_str()), (Some(3), Some("failed")), "{ended}");
    assert!(ended["duration_ms"].is_u64(), "{ended}");
    assert_eq!(entries[1]["command"], "terminal opened (80x24)", "{audit:?}", audit = audit.body);
    assert_eq!(entries[1]["outcome"], "succeeded");
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for series in [
        "terminal_sessions_active",
        "terminal_bytes_total{direction=\"in\"}",
        "terminal_bytes_total{direction=\"out\"}",
    ] {
        assert!(metrics.contains(series), "{series} is not exported");
    }
}

async fn ticket(app: &TestApp, project: &str) -> String {
    let reply = app.post(&format!("/projects/{project}/terminal/tickets"), &app.admin_key, json!({})).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert!(reply.body["expires_at"].is_string());
    reply.body["ticket"].as_str().unwrap().to_owned()
}

async fn tickets_work_once_for_one_project(backend: Backend) {
    let app = TestApp::on(backend).await;
    let once = ticket(&app, "hello").await;
    let mut term = Term::open(&app, "hello", &format!("ticket={once}"), None).await.unwrap();
    term.keys("echo $((6*7))\r").await;
    term.until("\r42\r\n").await;

    let again = Term::open(&app, "hello", &format!("ticket={once}"), None).await.unwrap_err();
    assert_eq!((again.status, again.body["error"]["code"].as_str()), (401, Some("UNAUTHORIZED")), "{again:?}");

    let elsewhere = ticket(&app, "hello").await;
    let refused = Term::open(&app, "other", &format!("ticket={elsewhere}"), None).await.unwrap_err();
    assert_eq!(refused.status, 403, "{refused:?}");
    // Spent by that attempt: not usable for its own project either.
    let spent = Term::open(&app, "hello", &format!("ticket={elsewhere}"), None).await.unwrap_err();
    assert_eq!(spent.status, 401, "{spent:?}");

    for bad in ["rdt_short", "nonsense", ""] {
        let refused = Term::open(&app, "hello", &format!("ticket={bad}"), None).await.unwrap_err();
        assert_eq!(refused.status, 401, "{bad}: {refused:?}");
    }
    let none = Term::open(&app, "hello", "", None).await.unwrap_err();
    assert_eq!(none.status, 401, "{none:?}");
    let missing = app.post("/projects/nope/terminal/tickets", &app.admin_key, json!({})).await;
    assert_eq!(missing.status, 404, "{}", missing.body);
    // Not a WebSocket: a JSON error, not a hang.
    let plain = app.get("/projects/hello/terminal", &app.admin_key).await;
    assert_eq!((plain.status, plain.error_code()), (400, "VALIDATION_FAILED"), "{}", plain.body);
    let huge = Term::open(&app, "hello", "cols=5000", Some(&app.admin_key)).await.unwrap_err();
    assert_eq!(huge.status, 400, "{huge:?}");
}

async fn a_key_without_terminal_open_is_refused(backend: Backend) {
    let app = TestApp::on(backend).await;
    let (_, key) = app.create_key(&["projects:read", "commands:execute"]).await;
    let refused = Term::open(&app, "hello", "", Some(&key)).await.unwrap_err();
    assert_eq!((refused.status, refused.body["error"]["code"].as_str()), (403, Some("FORBIDDEN")), "{refused:?}");
    let ticket = app.post("/projects/hello/terminal/tickets", &key, json!({})).await;
    assert_eq!(ticket.status, 403, "{}", ticket.body);
    let (_, allowed) = app.create_key(&["terminal:open"]).await;
    let mut term = Term::open(&app, "hello", "", Some(&allowed)).await.unwrap();
    term.keys("echo ok-$((2*3))\r").await;
    term.until("ok-6").await;
}

async fn an_abrupt_close_leaves_nothing_running(backend: Backend) {
    let app = TestApp::on(backend).await;
    let mut term = Term::open(&app, "hello", "", Some(&app.admin_key)).await.unwrap();
    let marker = marker();
    term.keys(&format!("sleep {marker} & sleep {marker} & echo started-$((40+2))\r")).await;
    term.until("started-42").await;
    // Both forked; each `sleep` shows in /proc once it has exec'd.
    let both = tokio::time::timeout(PATIENCE, async {
        while live_processes_with(&marker).len() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    assert!(both.await.is_ok(), "both jobs run");
    // No close frame: the TCP connection just goes.
    drop(term);
    assert_eq!(survivors_of(&marker).await, Vec::<u32>::new(), "the terminal's jobs are gone");
    // The end is audited as the client's.
    let ended = tokio::time::timeout(PATIENCE, async {
        loop {
            let audit = app.get("/audit?project_id=hello&limit=1", &app.admin_key).await;
            let text = audit.body["entries"][0]["command"].as_str().unwrap_or_default().to_owned();
            if text.starts_with("terminal ended") {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    assert!(ended.contains("closed by the client"), "{ended}");
}

async fn the_allowlist_and_the_rate_limit_apply_at_the_upgrade(backend: Backend) {
    let app = TestApp::on(backend).await;
    let create = |body: Value| app.post("/api-keys", &app.admin_key, body);
    let far = create(json!({"name": "far", "scopes": ["terminal:open"], "allowed_ips": ["10.0.0.0/8"]})).await;
    let far_key = far.body["key"].as_str().unwrap().to_owned();
    let refused = Term::open(&app, "hello", "", Some(&far_key)).await.unwrap_err();
    assert_eq!(refused.status, 403, "{refused:?}");
    // A ticket does not carry its key past the allowlist either: the key moved after issuing it.
    let moved = create(json!({"name": "moved", "scopes": ["terminal:open", "keys:admin"]})).await;
    let (moved_id, moved_key) = (moved.body["id"].as_str().unwrap(), moved.body["key"].as_str().unwrap());
    let ticket = app.post("/projects/hello/terminal/tickets", moved_key, json!({})).await;
    let ticket = ticket.body["ticket"].as_str().unwrap().to_owned();
    let patched =
        app.patch(&format!("/api-keys/{moved_id}"), &app.admin_key, json!({"allowed_ips": ["10.0.0.0/8"]})).await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    let refused = Term::open(&app, "hello", &format!("ticket={ticket}"), None).await.unwrap_err();
    assert_eq!(refused.status, 403, "{refused:?}");
    let slow = create(json!({"name": "slow", "scopes": ["terminal:open"], "rate_limit_per_minute": 2})).await;
    let slow_key = slow.body["key"].as_str().unwrap().to_owned();
    let ticket = app.post("/projects/hello/terminal/tickets", &slow_key, json!({})).await;
    assert_eq!(ticket.status, 201, "{}", ticket.body);
    let ticket = ticket.body["ticket"].as_str().unwrap().to_owned();
    let mut term = Term::open(&app, "hello", &format!("ticket={ticket}"), None).await.unwrap();
    term.keys("echo two-$((1+1))\r").await;
    term.until("two-2").await;
    // The ticket and the upgrade were the key's two requests of the minute.
    let limited = Term::open(&app, "hello", "", Some(&slow_key)).await.unwrap_err();
    assert_eq!((limited.status, limited.body["error"]["code"].as_str()), (429, Some("RATE_LIMITED")), "{limited:?}");
}

async fn an_idle_terminal_ends(backend: Backend) {
    let app =
        TestApp::on(backend).configure(|config| config.executor.terminal_idle_timeout = Duration::from_secs(1)).await;
    let mut term = Term::open(&app, "hello", "", Some(&app.admin_key)).await.unwrap();
    assert_eq!(term.read_to_close().await, None, "no exit frame: the shell did not exit");
    assert_eq!(term.close_reason.as_deref(), Some("idle timeout"));
    let audit = app.get("/audit?project_id=hello&limit=1", &app.admin_key).await;
    let entry = &audit.body["entries"][0];
    assert!(entry["command"].as_str().unwrap().starts_with("terminal ended: idle timeout"), "{entry}");
    assert_eq!(entry["outcome"], "timed_out");
}

/// A key that may only write files leaves a `.bashrc` and a `.profile` in the project: the
/// admin's terminal runs neither, and what the admin types is not kept in the project.
async fn project_files_never_become_shell_code_or_keep_history(backend: Backend) {
    let app = TestApp::on(backend).await;
    let (_, writer) = app.create_key(&["files:write"]).await;
    for rc in [".bashrc", ".profile", ".bash_profile"] {
        let put = app.client.put(app.url(&format!("/projects/hello/files/content?path={rc}")));
        let put = app.send(put.header("X-API-Key", &writer).body("echo PWNED-$((6*7))\n")).await;
        assert_eq!(put.status, 201, "{}", put.body);
    }
    let mut term = Term::open(&app, "hello", "", Some(&app.admin_key)).await.unwrap();
    term.keys("echo secret-$((3+4)); echo home-$HOME; echo done-$((1+1))\r").await;
    let seen = term.until("done-2").await;
    assert!(!String::from_utf8_lossy(&term.seen).contains("PWNED-42"), "an rc file ran: {seen}");
    let home = seen.split("home-").nth(2).or(seen.split("home-").nth(1)).unwrap_or_default().to_owned();
    assert!(!home.starts_with(app.project_path("hello").to_str().unwrap()), "HOME in the project: {home}");
    term.keys("exit\r").await;
    term.read_to_close().await;
    let kept: Vec<String> = std::fs::read_dir(app.project_path("hello"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.contains("history"))
        .collect();
    assert!(kept.is_empty(), "history kept in the project: {kept:?}");
}

/// A shell that prints without end to a client that reads none of it: the output is not
/// activity until the client takes it, so the terminal ends at the idle deadline and its shell
/// with it.
async fn a_client_that_stops_reading_is_idle_too(backend: Backend) {
    let app =
        TestApp::on(backend).configure(|config| config.executor.terminal_idle_timeout = Duration::from_secs(1)).await;
    let mut term = Term::open(&app, "hello", "", Some(&app.admin_key)).await.unwrap();
    let marker = marker();
    term.keys(&format!("stty -echo; echo go-$((2+2)); exec yes {marker}\r")).await;
    term.until("go-4").await;
    let ended = tokio::time::timeout(PATIENCE, async {
        loop {
            let audit = app.get("/audit?project_id=hello&limit=1", &app.admin_key).await;
            let entry = audit.body["entries"][0].clone();
            if entry["command"].as_str().unwrap_or_default().starts_with("terminal ended") {
                return entry;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the terminal never ended");
    assert_eq!(ended["outcome"], "timed_out", "{ended}");
    assert_eq!(survivors_of(&marker).await, Vec::<u32>::new(), "the shell is gone");
    drop(term);
}

/// `VmRSS` (KiB) and `Threads` of a process.
fn rss_and_threads(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|line| line.starts_with(name)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    (field("VmRSS:"), field("Threads:"))
}

/// Whether `pid` sleeps writing to a terminal (the kernel's buffer is full) or is gone.
fn blocked_on_the_terminal_or_gone(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return true };
    let state = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
    state.starts_with('Z') || (state.starts_with('S') && (wchan.contains("tty") || wchan.contains("wait_woken")))
}

/// The real binary: 50 terminals open at once cost a few MiB and no thread each, and a client
/// that stops reading a shell's output stops the shell instead of filling the server's memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_terminals_and_a_stalled_reader_keep_the_server_small() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("projects/hello")).unwrap();
    let admin = rdev_api::domain::ApiKeySecret::generate().expose().to_owned();
    // Fifty terminals of one key: past the default quota, which has a test of its own.
    let envs = [
        ("RDEV_BOOTSTRAP_API_KEY", admin.as_str()),
        ("RDEV_RATE_LIMIT_PER_MINUTE", "100000"),
        ("RDEV_MAX_TERMINALS_PER_KEY", "100"),
    ];
    let server = crate::support::process::ServerProcess::start(dir.path(), &envs).await;
    let addr = server.addr.clone();
    let open = |n: usize| {
        let (addr, admin) = (addr.clone(), admin.clone());
        async move {
            let mut term = Term::open_at(&addr, "hello", "", Some(&admin)).await.unwrap();
            term.keys(&format!("echo ready-$(({n}+1000))\r")).await;
            term.until(&format!("ready-{}", n + 1000)).await;
            term
        }
    };
    drop(open(0).await);
    let (rss_before, threads_before) = rss_and_threads(server.pid());
    let terms = futures_util::future::join_all((1..=50).map(open)).await;
    let (rss_open, threads_open) = rss_and_threads(server.pid());
    eprintln!(
        "50 terminals: RSS {rss_before} -> {rss_open} KiB (+{:.1} MiB), threads {threads_before} -> {threads_open}",
        rss_open.saturating_sub(rss_before) as f64 / 1024.0
    );
    assert!(threads_open <= threads_before + 4, "a thread per terminal: {threads_before} -> {threads_open}");
    assert!(rss_open < rss_before + 64 * 1024, "RSS {rss_before} -> {rss_open} KiB");
    drop(terms);

    // 64 MiB of output to a client that reads none of it for now.
    const BYTES: u64 = 64 << 20;
    let mut term = Term::open_at(&addr, "hello", "", Some(&admin)).await.unwrap();
    let (rss_stall, _) = rss_and_threads(server.pid());
    term.keys(&format!("stty -echo; head -c {BYTES} /dev/zero; echo; echo end-of-$((6*7))\r")).await;
    let marker = BYTES.to_string();
    let writer = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(pid) = live_processes_with(&marker).into_iter().next() {
                return pid;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the writer started");
    tokio::time::timeout(PATIENCE, async {
        while !blocked_on_the_terminal_or_gone(writer) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the writer blocked or ended");
    assert!(!live_processes_with(&marker).is_empty(), "the writer is blocked, not done: output waits for the client");
    let (rss_stalled, _) = rss_and_threads(server.pid());
    eprintln!("stalled reader: RSS {rss_stall} -> {rss_stalled} KiB with {BYTES} bytes waiting");
    assert!(rss_stalled < rss_stall + 16 * 1024, "RSS {rss_stall} -> {rss_stalled} KiB");
    // Now read it all: nothing was lost while it waited.
    term.until("end-of-42").await;
    let zeros = term.seen.iter().filter(|byte| **byte == 0).count() as u64;
    assert_eq!(zeros, BYTES);
}
