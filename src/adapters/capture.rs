//! Reading a command's output into a buffer with a cap: past the cap, output is read and thrown
//! away, so the command never blocks on a full pipe and runs to completion. Both executors use
//! it, so output is capped, decoded and streamed the same way whichever ran the command.

use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::{
    domain::ExecOutcome,
    ports::{OutputChunk, OutputSink, Stream},
};

const CHUNK: usize = 16 * 1024;

#[derive(Debug)]
pub(crate) struct CappedBuffer {
    bytes: Vec<u8>,
    cap: usize,
    truncated: bool,
    stream: Stream,
    /// How much of `bytes` was already sent live; the rest waits for a complete UTF-8 character.
    sent: usize,
}

impl CappedBuffer {
    pub(crate) fn new(cap: usize, stream: Stream) -> Self {
        Self { bytes: Vec::new(), cap, truncated: false, stream, sent: 0 }
    }

    fn push(&mut self, chunk: &[u8], live: &OutputSink) {
        let room = self.cap - self.bytes.len();
        if chunk.len() > room {
            self.truncated = true;
        }
        self.bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if let Some(live) = live {
            self.send(live, false);
        }
    }

    /// Sends what was kept since the last send, up to the last complete character (all of it at
    /// the end of the stream).
    fn send(&mut self, live: &tokio::sync::mpsc::UnboundedSender<OutputChunk>, end: bool) {
        let pending = &self.bytes[self.sent..];
        let upto = match std::str::from_utf8(pending) {
            Ok(_) => pending.len(),
            // An incomplete character at the end waits for its other bytes.
            Err(e) if e.error_len().is_none() && !end => e.valid_up_to(),
            Err(_) => pending.len(),
        };
        if upto > 0 {
            let text = String::from_utf8_lossy(&pending[..upto]).into_owned();
            // A closed receiver means nobody watches any more; the output is still kept.
            let _ = live.send(OutputChunk { stream: self.stream, text });
            self.sent += upto;
        }
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

/// The outcome of a run that started at `started_at` (wall clock) and `started` (monotonic, for
/// the duration), from its captured output.
pub(crate) fn outcome(
    stdout: CappedBuffer,
    stderr: CappedBuffer,
    exit_code: i32,
    timed_out: bool,
    started_at: DateTime<Utc>,
    started: Instant,
) -> ExecOutcome {
    let (stdout, stdout_truncated) = stdout.finish();
    let (stderr, stderr_truncated) = stderr.finish();
    ExecOutcome {
        exit_code,
        stdout,
        stderr,
        stdout_truncated,
        stderr_truncated,
        timed_out,
        started_at,
        finished_at: Utc::now(),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

/// Reads `source` to EOF into `into`, sending it to `live` as it comes. Stops quietly on a read
/// error: the exit status, not the pipe, is the command's result.
pub(crate) async fn drain(source: Option<&mut (impl AsyncRead + Unpin)>, into: &mut CappedBuffer, live: &OutputSink) {
    let Some(source) = source else { return };
    let mut chunk = vec![0u8; CHUNK];
    while let Ok(n) = source.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        into.push(&chunk[..n], live);
    }
    if let Some(live) = live {
        into.send(live, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_the_first_cap_bytes_and_reads_the_rest() {
        let mut buffer = CappedBuffer::new(4, Stream::Stdout);
        let mut source: &[u8] = b"abcdefgh";
        drain(Some(&mut source), &mut buffer, &None).await;
        assert!(source.is_empty(), "everything was read");
        assert_eq!(buffer.finish(), ("abcd".to_string(), true));
    }

    #[tokio::test]
    async fn invalid_utf8_is_replaced() {
        let mut buffer = CappedBuffer::new(16, Stream::Stdout);
        let mut source: &[u8] = b"ok \xff\xfe";
        drain(Some(&mut source), &mut buffer, &None).await;
        assert_eq!(buffer.finish(), ("ok \u{fffd}\u{fffd}".to_string(), false));
    }

    #[test]
    fn live_chunks_never_split_a_character() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let live = Some(tx);
        let mut buffer = CappedBuffer::new(64, Stream::Stderr);
        let euro = "€".as_bytes();
        buffer.push(&[b'a', euro[0]], &live);
        buffer.push(&euro[1..], &live);
        let chunks: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok()).map(|c| c.text).collect();
        assert_eq!(chunks, ["a", "€"]);
    }
}
