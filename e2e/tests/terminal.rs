//! v2: the terminal, on the Kubernetes executor of scripts/e2e: a ticket opens it once,
//! keystrokes reach a shell on a terminal, a resize reaches it, and `exit 3` ends it with 3.

mod common;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_ticket_opens_a_terminal_once() {
    let Some(e2e) = common::target("terminal::ticket") else { return };
    let (_, key) = e2e.create_key("terminal", &["terminal:open"]).await;
    let ticket = e2e.post(&format!("/projects/{}/terminal/tickets", e2e.project), &key, json!({})).await;
    assert_eq!(ticket.status, 201, "{}", ticket.text);
    let ticket = ticket.body["ticket"].as_str().unwrap().to_owned();
    let ws = e2e.base.replacen("http", "ws", 1);
    let url = format!("{ws}/projects/{}/terminal?cols=90&rows=20&ticket={ticket}", e2e.project);
    let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str()).await.expect("the ticket opens it");
    let script = "until [ \"$(stty size)\" = '20 90' ]; do sleep 0.01; done; echo sized-$((6*7)); exit 3\r";
    socket.send(Message::binary(script.as_bytes().to_vec())).await.unwrap();
    let (mut seen, mut exit) = (Vec::new(), None);
    let read = async {
        while let Some(Ok(message)) = socket.next().await {
            match message {
                Message::Binary(bytes) => seen.extend_from_slice(&bytes),
                Message::Text(text) => {
                    exit = serde_json::from_str::<Value>(text.as_str()).unwrap()["exit_code"].as_i64()
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), read).await.expect("the terminal ends");
    assert!(String::from_utf8_lossy(&seen).contains("sized-42"), "{}", String::from_utf8_lossy(&seen));
    assert_eq!(exit, Some(3));
    let again = tokio_tungstenite::connect_async(url.as_str()).await;
    assert!(
        matches!(&again, Err(tokio_tungstenite::tungstenite::Error::Http(response)) if response.status() == 401),
        "a ticket works once"
    );
}
