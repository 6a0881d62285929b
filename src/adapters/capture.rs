//! Reading a command's output into a buffer with a cap: past the cap, output is read and thrown
//! away, so the command never blocks on a full pipe and runs to completion. Both executors use
//! it, so output is capped and decoded the same way whichever ran the command.

use tokio::io::{AsyncRead, AsyncReadExt};

const CHUNK: usize = 16 * 1024;

#[derive(Debug)]
pub(crate) struct CappedBuffer {
    bytes: Vec<u8>,
    cap: usize,
    truncated: bool,
}

impl CappedBuffer {
    pub(crate) fn new(cap: usize) -> Self {
        Self { bytes: Vec::new(), cap, truncated: false }
    }

    fn push(&mut self, chunk: &[u8]) {
        let room = self.cap - self.bytes.len();
        if chunk.len() > room {
            self.truncated = true;
        }
        self.bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }

    /// The text (invalid UTF-8 replaced, never an error) and whether anything was dropped.
    pub(crate) fn finish(self) -> (String, bool) {
        let text = match String::from_utf8(self.bytes) {
            Ok(text) => text,
            Err(invalid) => String::from_utf8_lossy(invalid.as_bytes()).into_owned(),
        };
        (text, self.truncated)
    }
}

/// Reads `source` to EOF into `into`. Stops quietly on a read error: the exit status, not the
/// pipe, is the command's result.
pub(crate) async fn drain(source: Option<&mut (impl AsyncRead + Unpin)>, into: &mut CappedBuffer) {
    let Some(source) = source else { return };
    let mut chunk = vec![0u8; CHUNK];
    while let Ok(n) = source.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        into.push(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_the_first_cap_bytes_and_reads_the_rest() {
        let mut buffer = CappedBuffer::new(4);
        let mut source: &[u8] = b"abcdefgh";
        drain(Some(&mut source), &mut buffer).await;
        assert!(source.is_empty(), "everything was read");
        assert_eq!(buffer.finish(), ("abcd".to_string(), true));
    }

    #[tokio::test]
    async fn invalid_utf8_is_replaced() {
        let mut buffer = CappedBuffer::new(16);
        let mut source: &[u8] = b"ok \xff\xfe";
        drain(Some(&mut source), &mut buffer).await;
        assert_eq!(buffer.finish(), ("ok \u{fffd}\u{fffd}".to_string(), false));
    }
}
