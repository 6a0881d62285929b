//! The request line of a connection's first request, read before hyper sees the connection, so
//! a line too long for the server gets the API's 414 JSON (with an `X-Request-Id`) instead of
//! hyper's bare status line. What was read is handed to hyper in front of the socket.
//!
//! Later requests on the same keep-alive connection are hyper's alone; past its own limit
//! (64 KiB) it answers a bare 414. Clients that send such lines open a connection per request
//! in practice, and the first request is what a scanner's first probe is.

use std::{
    io::IoSlice,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf},
    net::TcpStream,
};

use super::MAX_REQUEST_LINE;

/// The connection with its first bytes read, when they hold a request line of a fitting
/// length; `None` (the connection closed) when the line is too long (after answering 414), or
/// the client closed or stalled before sending one.
pub(super) async fn checked(mut stream: TcpStream, timeout: Duration) -> Option<Prefixed> {
    let mut read = Vec::with_capacity(4096);
    let line_ended = tokio::time::timeout(timeout, async {
        loop {
            let start = read.len();
            if stream.read_buf(&mut read).await.ok()? == 0 {
                return None;
            }
            if let Some(end) = read[start..].iter().position(|b| *b == b'\n') {
                return Some(start + end <= MAX_REQUEST_LINE);
            }
            if read.len() > MAX_REQUEST_LINE {
                return Some(false);
            }
        }
    })
    .await
    .ok()??;
    if !line_ended {
        let _ = stream.write_all(&uri_too_long()).await;
        let _ = stream.shutdown().await;
        return None;
    }
    Some(Prefixed { read, position: 0, stream })
}

/// A 414 as the router would write it.
fn uri_too_long() -> Vec<u8> {
    let request_id = uuid::Uuid::new_v4();
    let body = serde_json::json!({"error": {
        "code": "URI_TOO_LONG",
        "message": format!("the request line is longer than {MAX_REQUEST_LINE} bytes"),
        "request_id": request_id.to_string(),
    }})
    .to_string();
    format!(
        "HTTP/1.1 414 URI Too Long\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         x-request-id: {request_id}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A socket with bytes already read from it in front.
pub(super) struct Prefixed {
    read: Vec<u8>,
    position: usize,
    stream: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.position < this.read.len() {
            let n = buf.remaining().min(this.read.len() - this.position);
            buf.put_slice(&this.read[this.position..this.position + n]);
            this.position += n;
            if this.position == this.read.len() {
                this.read = Vec::new();
                this.position = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
