//! No client can hold the server's connections: idle and half-sent requests are closed at the
//! header deadline on HTTP/1 and HTTP/2 alike, a request body that stops arriving gets 408, open
//! connections are capped (with `/health` answering at the cap), and an over-long request line
//! gets the API's JSON. A slow reader of a long answer is never cut.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use crate::{
    on_both_databases,
    support::{Db, TestApp},
};

on_both_databases!(
    idle_and_half_sent_connections_are_closed_at_the_header_deadline,
    past_the_connection_cap_only_probes_are_served,
    one_address_holds_at_most_its_connections,
    an_overlong_request_line_gets_a_json_414,
    half_an_http2_preface_and_an_idle_http2_connection_are_closed,
    a_request_body_that_stops_arriving_gets_408,
    a_slow_reader_of_a_long_answer_is_not_cut,
);

/// The client's HTTP/2 preface and an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
/// A PING frame (8 bytes of payload, stream 0).
const H2_PING: &[u8] = b"\0\0\x08\x06\0\0\0\0\0pingping";

async fn half_an_http2_preface_and_an_idle_http2_connection_are_closed(db: Db) {
    let app = TestApp::on(db).configure(|c| c.server.header_timeout = Duration::from_millis(300)).await;
    let mut half = TcpStream::connect(app.addr).await.unwrap();
    half.write_all(&H2_PREFACE[..18]).await.unwrap();
    assert!(read_until_closed(&mut half, Duration::from_secs(5)).await.is_some(), "half a preface stays");

    // A whole preface, then only PINGs (which the server answers) and never a request.
    let mut pinging = TcpStream::connect(app.addr).await.unwrap();
    pinging.write_all(H2_PREFACE).await.unwrap();
    let (mut reader, mut writer) = pinging.split();
    let pings = async {
        for _ in 0..50 {
            if writer.write_all(H2_PING).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let mut received = Vec::new();
    let (closed, ()) =
        tokio::join!(tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut received)), pings);
    assert!(closed.is_ok(), "a connection that only pings stays");
    assert!(received.len() > 9, "the server spoke HTTP/2 before it closed");
}

async fn a_request_body_that_stops_arriving_gets_408(db: Db) {
    let app = TestApp::on(db).configure(|c| c.server.header_timeout = Duration::from_millis(300)).await;
    let requests = [
        format!(
            "PUT /projects/hello/files/content?path=stalled.bin HTTP/1.1\r\nHost: x\r\nX-API-Key: {}\r\n",
            app.admin_key
        ),
        format!(
            "POST /projects/hello/shell HTTP/1.1\r\nHost: x\r\nX-API-Key: {}\r\nContent-Type: application/json\r\n",
            app.admin_key
        ),
    ];
    for head in requests {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        stream.write_all(format!("{head}Content-Length: 1000\r\n\r\n{{\"command\":").as_bytes()).await.unwrap();
        let answer = read_until_closed(&mut stream, Duration::from_secs(5)).await.expect("answered and closed");
        let (status, body) = answer.split_once("\r\n\r\n").expect("a response");
        assert!(status.starts_with("HTTP/1.1 408"), "{head}: {answer}");
        let body: Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"]["code"], "REQUEST_TIMEOUT", "{body}");
    }
    assert!(!app.project_path("hello").join("stalled.bin").exists(), "nothing half-written");
}

async fn a_slow_reader_of_a_long_answer_is_not_cut(db: Db) {
    let app = TestApp::on(db).configure(|c| c.server.header_timeout = Duration::from_millis(300)).await;
    let size = 32 << 20;
    std::fs::write(app.project_path("hello").join("big.bin"), vec![7u8; size]).unwrap();
    let mut response = app
        .client
        .get(app.url("/projects/hello/files/content?path=big.bin"))
        .header("X-API-Key", &app.admin_key)
        .send()
        .await
        .unwrap();
    let mut read = response.chunk().await.unwrap().map_or(0, |c| c.len());
    // Slower than the deadline: the answer is in flight, so the connection is not idle.
    tokio::time::sleep(Duration::from_millis(900)).await;
    while let Some(chunk) = response.chunk().await.unwrap() {
        read += chunk.len();
    }
    assert_eq!(read, size);
}

/// Reads until the server closes the connection (at most `within`); what it sent.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut received = Vec::new();
    match tokio::time::timeout(within, stream.read_to_end(&mut received)).await {
        Ok(_) => Some(String::from_utf8_lossy(&received).into_owned()),
        Err(_) => None,
    }
}

async fn idle_and_half_sent_connections_are_closed_at_the_header_deadline(db: Db) {
    let app = TestApp::on(db).configure(|c| c.server.header_timeout = Duration::from_millis(300)).await;
    let started = Instant::now();
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    let mut partial = TcpStream::connect(app.addr).await.unwrap();
    partial.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    assert!(read_until_closed(&mut silent, Duration::from_secs(5)).await.is_some(), "a silent connection stays");
    assert!(read_until_closed(&mut partial, Duration::from_secs(5)).await.is_some(), "a partial request stays");
    println!("{db:?}: closed after {:?} (deadline 300 ms)", started.elapsed());

    // A keep-alive connection that answered a request, then went quiet.
    let mut kept = TcpStream::connect(app.addr).await.unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let answer = read_until_closed(&mut kept, Duration::from_secs(5)).await.expect("closed when idle");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

async fn past_the_connection_cap_only_probes_are_served(db: Db) {
    let app = TestApp::on(db).configure(|c| c.server.max_connections = 16).await;
    let client = || reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    // Sixteen idle connections: at the cap, each new one takes the place of the idlest.
    let mut idle = Vec::new();
    for _ in 0..16 {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 512];
        assert!(stream.read(&mut buf).await.unwrap() > 0);
        idle.push(stream);
    }
    let served = client().get(app.url("/projects")).header("X-API-Key", &app.admin_key).send().await.unwrap();
    assert_eq!(served.status(), 200, "an idle connection gave its place");
    assert_eq!(read_until_closed(&mut idle[0], Duration::from_secs(5)).await.as_deref(), Some(""), "the idlest");
    drop(idle);

    // Sixteen busy ones (a body that has not arrived yet): nobody's place to take.
    let mut held = Vec::new();
    for _ in 0..16 {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        let head = format!(
            "PUT /projects/hello/files/content?path=slow HTTP/1.1\r\nHost: x\r\nX-API-Key: {}\r\nContent-Length: 10\r\n\r\n",
            app.admin_key
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        held.push(stream);
    }
    crate::reliability::eventually("every place busy", Duration::from_secs(5), async || {
        client().get(app.url("/projects")).header("X-API-Key", &app.admin_key).send().await.unwrap().status() == 503
    })
    .await;
    // Fresh clients now: probes answer, anything else is refused clearly.
    let health = client().get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200, "/health answers at the cap");
    let refused = client().get(app.url("/projects")).header("X-API-Key", &app.admin_key).send().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert!(refused.headers().contains_key("x-request-id"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "UNAVAILABLE", "{body}");

    drop(held);
    crate::reliability::eventually("served again", Duration::from_secs(5), async || {
        client().get(app.url("/projects")).header("X-API-Key", &app.admin_key).send().await.unwrap().status() == 200
    })
    .await;
}

async fn one_address_holds_at_most_its_connections(db: Db) {
    let app = TestApp::on(db).configure(|c| c.server.max_connections_per_ip = 4).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 512];
        assert!(stream.read(&mut buf).await.unwrap() > 0);
        held.push(stream);
    }
    // From the same address, a fifth is closed at accept; from another, served.
    let mut fifth = TcpStream::connect(app.addr).await.unwrap();
    let _ = fifth.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(read_until_closed(&mut fifth, Duration::from_secs(5)).await.as_deref(), Some(""), "closed unanswered");
    let other = tokio::net::TcpSocket::new_v4().unwrap();
    other.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = other.connect(app.addr).await.unwrap();
    other.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let answer = read_until_closed(&mut other, Duration::from_secs(5)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(held);
}

async fn an_overlong_request_line_gets_a_json_414(db: Db) {
    let app = TestApp::on(db).await;
    let long = format!("/projects/{}", "a".repeat(100_000));
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let request = format!("GET {long} HTTP/1.1\r\nHost: x\r\n\r\n");
    // The server may answer (and close) before it has read all of it.
    let _ = stream.write_all(request.as_bytes()).await;
    let answer = read_until_closed(&mut stream, Duration::from_secs(5)).await.expect("answered and closed");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 414"), "{head}");
    assert!(head.to_lowercase().contains("x-request-id: "), "{head}");
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["error"]["code"], "URI_TOO_LONG");
    assert!(body["error"]["request_id"].is_string());

    // One that fits is served as usual.
    let fits = app.get(&format!("/projects/{}", "a".repeat(60)), &app.admin_key).await;
    assert_eq!(fits.status, 404);
}

/// While every blocking thread is taken, the project routes cannot be served, and `/ready`
/// says so instead of answering from the async threads; once they are free it is ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_while_the_blocking_pool_is_full() {
    let app = TestApp::on(Db::Sqlite).await;
    let (release, held) = std::sync::mpsc::channel::<()>();
    let held = std::sync::Arc::new(std::sync::Mutex::new(held));
    // tokio's default: 512 blocking threads, all of them parked here.
    let blockers: Vec<_> = (0..512)
        .map(|_| {
            let held = held.clone();
            tokio::task::spawn_blocking(move || {
                let _ = held.lock().unwrap().recv();
            })
        })
        .collect();
    let ready = app.send(app.client.get(app.url("/ready"))).await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(ready.body["checks"]["blocking_pool"].as_str().unwrap().contains("no thread"), "{}", ready.body);
    drop(release);
    for blocker in blockers {
        blocker.await.unwrap();
    }
    let ready = app.send(app.client.get(app.url("/ready"))).await;
    assert_eq!((ready.status, ready.body["checks"]["blocking_pool"].as_str()), (200, Some("ok")));
}
