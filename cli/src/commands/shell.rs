//! `rdev shell PROJECT`: an interactive terminal over the server's WebSocket. The local terminal
//! is in raw mode while it runs (keys, Ctrl-C included, go to the remote shell) and is restored
//! on every way out; the window's size is sent at the start and on every SIGWINCH.

use std::io::IsTerminal;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    signal::unix::{SignalKind, signal},
};
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest, http::HeaderValue};

use super::segment;
use crate::{
    client::Client,
    error::{CliError, Result},
    exit,
};

pub async fn shell(client: &Client, project: &str) -> Result<u8> {
    let (cols, rows) = window_size();
    let mut url = client.ws_url(&format!("/projects/{}/terminal", segment(project)));
    url.query_pairs_mut().append_pair("cols", &cols.to_string()).append_pair("rows", &rows.to_string());
    let mut request = url.as_str().into_client_request().map_err(|error| CliError::WebSocket(Box::new(error)))?;
    let key =
        HeaderValue::from_str(client.key()).map_err(|_| CliError::Usage("the API key is not a valid header".into()))?;
    request.headers_mut().insert("X-API-Key", key);
    let socket = match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => socket,
        Err(tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            return Err(CliError::from_body(status, response.body().as_deref().unwrap_or_default()));
        }
        Err(error) => return Err(CliError::WebSocket(Box::new(error))),
    };
    let raw = RawMode::enable()?;
    let end = relay(socket).await;
    drop(raw);
    let end = end?;
    if let Some(reason) = end["reason"].as_str() {
        eprintln!("rdev: the terminal ended: {reason}");
    }
    Ok(end["exit_code"].as_i64().and_then(|code| u8::try_from(code.rem_euclid(256)).ok()).unwrap_or(exit::NO_EXIT_CODE))
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Keys to the socket, output to stdout, resizes as they happen; the server's exit frame.
async fn relay(socket: Socket) -> Result<Value> {
    let (mut sink, mut stream) = socket.split();
    let mut stdin = tokio::io::stdin();
    let mut stdout = tokio::io::stdout();
    let mut keys = [0u8; 4096];
    let mut stdin_open = true;
    let ws_error = |error| CliError::WebSocket(Box::new(error));
    let mut resized = signal(SignalKind::window_change()).map_err(CliError::io("watching the window size"))?;
    let mut hung_up = signal(SignalKind::hangup()).map_err(CliError::io("watching for SIGHUP"))?;
    let mut terminated = signal(SignalKind::terminate()).map_err(CliError::io("watching for SIGTERM"))?;
    loop {
        tokio::select! {
            read = stdin.read(&mut keys), if stdin_open => match read {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => sink.send(Message::Binary(keys[..n].to_vec().into())).await.map_err(ws_error)?,
            },
            _ = resized.recv() => {
                let (cols, rows) = window_size();
                let resize = json!({"type": "resize", "cols": cols, "rows": rows}).to_string();
                sink.send(Message::Text(resize.into())).await.map_err(ws_error)?;
            }
            message = stream.next() => match message {
                Some(Ok(Message::Binary(bytes))) => {
                    stdout.write_all(&bytes).await.map_err(CliError::io("writing to the terminal"))?;
                    stdout.flush().await.map_err(CliError::io("writing to the terminal"))?;
                }
                Some(Ok(Message::Text(text))) => {
                    let frame: Value = serde_json::from_str(&text).unwrap_or_default();
                    match frame["type"].as_str() {
                        Some("exit") => {
                            let _ = sink.send(Message::Close(None)).await;
                            return Ok(frame);
                        }
                        Some("error") => eprint!("\r\nrdev: {}\r\n", frame["error"]["message"].as_str().unwrap_or("error")),
                        _ => {}
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let reason = frame.map(|frame| frame.reason.to_string()).filter(|reason| !reason.is_empty());
                    return Ok(json!({"exit_code": null, "reason": reason.unwrap_or_else(|| "the server closed the connection".into())}));
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(ws_error(error)),
                None => return Ok(json!({"exit_code": null, "reason": "the connection was lost"})),
            },
            _ = hung_up.recv() => return Ok(json!({"exit_code": null, "reason": "SIGHUP"})),
            _ = terminated.recv() => return Ok(json!({"exit_code": null, "reason": "SIGTERM"})),
        }
    }
}

fn window_size() -> (u16, u16) {
    crossterm::terminal::size().ok().filter(|&(cols, rows)| cols > 0 && rows > 0).unwrap_or((80, 24))
}

/// Raw mode for as long as it lives, when stdin is a terminal: dropped on every way out, a
/// panic's unwinding included.
struct RawMode(bool);

impl RawMode {
    fn enable() -> Result<Self> {
        if !std::io::stdin().is_terminal() {
            return Ok(Self(false));
        }
        crossterm::terminal::enable_raw_mode().map_err(CliError::io("putting the terminal in raw mode"))?;
        Ok(Self(true))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if self.0 {
            let _ = crossterm::terminal::disable_raw_mode();
        }
    }
}
