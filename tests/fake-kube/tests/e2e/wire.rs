//! The exec wire protocol below kube-rs: a hand-written upgrade request (POST, a chosen
//! subprotocol list) and the raw channel frames that come back.

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::support::fake;

const EXEC: &str = "/api/v1/namespaces/rdev/pods/pod-a/exec?command=echo&command=hi&container=main&stdout=true";

/// Sends an upgrade request and reads the response head: (status code, lower-cased head, stream).
async fn upgrade(addr: std::net::SocketAddr, method: &str, protocols: &str) -> (u16, String, TcpStream) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {EXEC} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: {protocols}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // Byte by byte, so nothing after the head (the first frames) is consumed here.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await.unwrap());
    }
    let head = String::from_utf8(head).unwrap().to_lowercase();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, head, stream)
}

#[tokio::test]
async fn post_upgrade_with_v4_streams_channels_and_status() {
    let kube = fake().await;
    let (code, head, stream) = upgrade(kube.addr(), "POST", "v4.channel.k8s.io").await;
    assert_eq!(code, 101, "{head}");
    assert!(head.contains("sec-websocket-protocol: v4.channel.k8s.io\r\n"), "{head}");
    // RFC 6455's own example key and accept value.
    assert!(head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n"), "{head}");

    let mut socket = WebSocketStream::from_raw_socket(stream, Role::Client, None).await;
    let mut frames = Vec::new();
    while let Some(message) = socket.next().await {
        match message.unwrap() {
            Message::Binary(data) => frames.push(data.to_vec()),
            Message::Close(_) => break,
            _ => {}
        }
    }
    let status = br#"{"metadata":{},"status":"Success"}"#;
    assert_eq!(frames, [vec![1], [&[1u8][..], b"hi\n"].concat(), [&[3u8][..], &status[..]].concat()]);
}

#[tokio::test]
async fn subprotocol_is_the_first_one_the_client_offers() {
    let kube = fake().await;
    let (_, head, _) = upgrade(kube.addr(), "GET", "base64.channel.k8s.io, v4.channel.k8s.io, v5.channel.k8s.io").await;
    assert!(head.contains("sec-websocket-protocol: v4.channel.k8s.io\r\n"), "{head}");
    let (_, head, _) = upgrade(kube.addr(), "GET", "v5.channel.k8s.io, v4.channel.k8s.io").await;
    assert!(head.contains("sec-websocket-protocol: v5.channel.k8s.io\r\n"), "{head}");
    let (code, head, _) = upgrade(kube.addr(), "GET", "channel.k8s.io").await;
    assert_eq!(code, 400, "{head}");
}
