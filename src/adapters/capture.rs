//! Reading a command's output through an `OutputRecorder`: each stream keeps its head and its
//! tail within the budget and the middle is read and thrown away, so the command never blocks on
//! a full pipe, runs to completion, and the server holds at most the budget per stream. Both
//! executors use it, so output is kept, numbered and streamed the same way whichever ran it.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use chrono::{DateTime, SubsecRound as _, Utc};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::{
    domain::{ExecOutcome, OutputRecorder},
    ports::{OutputChunk, OutputSink, Stream},
};

const CHUNK: usize = 16 * 1024;

/// One command's output, both streams, as it is read.
/// How often at most a growing tail is sent (to be stored) while the command runs.
const TAIL_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(crate) struct Capture {
    recorder: Mutex<OutputRecorder>,
    live: OutputSink,
    /// When each stream's tail was last sent, and whether it changed since.
    tails: Mutex<[TailSent; 2]>,
}

#[derive(Debug, Default, Clone, Copy)]
struct TailSent {
    at: Option<Instant>,
    changed: bool,
}

impl Capture {
    /// For a command that keeps `max_output_bytes` per stream; entries also go to `live`.
    pub(crate) fn new(max_output_bytes: usize, live: OutputSink) -> Self {
        let recorder = Mutex::new(OutputRecorder::new(max_output_bytes, 1));
        Self { recorder, live, tails: Mutex::default() }
    }

    fn push(&self, stream: Stream, bytes: &[u8]) {
        let entry = self.lock().push(stream, bytes);
        if let Some(entry) = entry {
            self.send(OutputChunk::Entry(entry));
        }
        self.send_tail(stream, false);
    }

    /// Sends `stream`'s tail (to be stored) if it changed and was last sent a second ago or
    /// more, or, when `quiet` (nothing came for a second), if it changed at all: so what a
    /// replica that dies loses of a tail is at most its last second.
    fn send_tail(&self, stream: Stream, quiet: bool) {
        if self.live.is_none() {
            return;
        }
        let tail = {
            let recorder = self.lock();
            let mut tails = self.tails.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let sent = &mut tails[usize::from(stream == Stream::Stderr)];
            if !recorder.has_tail(stream) {
                return;
            }
            sent.changed |= !quiet;
            let due = quiet || sent.at.is_none_or(|at| at.elapsed() >= TAIL_EVERY);
            if !(due && sent.changed) {
                return;
            }
            // Copied only when due: at most once a second per stream.
            let Some(tail) = recorder.tail(stream) else { return };
            *sent = TailSent { at: Some(Instant::now()), changed: false };
            tail
        };
        self.send(OutputChunk::Tail(tail));
    }

    fn send(&self, chunk: OutputChunk) {
        if let Some(live) = &self.live {
            // A closed receiver means nobody watches any more; the output is still kept.
            let _ = live.send(chunk);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutputRecorder> {
        // A panic while holding the lock cannot leave the recorder half-changed in a way that
        // matters more than losing the output: keep going with what it holds.
        self.recorder.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The outcome of a run that started at `started_at` (wall clock) and `started` (monotonic,
    /// for the duration): the entries still to come (gap, tail) go live, then what was kept.
    pub(crate) fn outcome(
        self,
        exit_code: i32,
        timed_out: bool,
        started_at: DateTime<Utc>,
        started: Instant,
    ) -> ExecOutcome {
        let entries = self.lock().finish();
        entries.into_iter().for_each(|entry| self.send(OutputChunk::Entry(entry)));
        let recorder = self.lock();
        let (stdout, stderr) = (recorder.kept(Stream::Stdout), recorder.kept(Stream::Stderr));
        ExecOutcome {
            exit_code,
            stdout: stdout.text(),
            stderr: stderr.text(),
            stdout_truncated: stdout.omitted.is_some(),
            stderr_truncated: stderr.omitted.is_some(),
            stdout_omitted: stdout.omitted,
            stderr_omitted: stderr.omitted,
            timed_out,
            // Microseconds, as the databases store them: the answer and the stored command agree.
            started_at: started_at.trunc_subsecs(6),
            finished_at: Utc::now().trunc_subsecs(6),
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            shell_state: None,
            error: None,
        }
    }
}

/// Reads `source` to EOF into `capture` as `stream`. Stops quietly on a read error: the exit
/// status, not the pipe, is the command's result.
pub(crate) async fn drain(source: Option<&mut (impl AsyncRead + Unpin)>, stream: Stream, capture: &Capture) {
    let Some(source) = source else { return };
    // Read into spare capacity: no 16 KiB zeroed per stream per command.
    let mut chunk = bytes::BytesMut::with_capacity(CHUNK);
    loop {
        chunk.clear();
        // A read is cancel-safe: one cut short by the timeout loses nothing.
        match tokio::time::timeout(TAIL_EVERY, source.read_buf(&mut chunk)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(_)) => capture.push(stream, &chunk),
            Err(_quiet) => capture.send_tail(stream, true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EntryKind, Omitted};

    fn run(capture: Capture) -> ExecOutcome {
        capture.outcome(0, false, Utc::now(), Instant::now())
    }

    #[tokio::test]
    async fn keeps_the_head_and_the_tail_and_reads_everything() {
        let capture = Capture::new(4, None);
        let mut source: &[u8] = b"abcdefgh";
        drain(Some(&mut source), Stream::Stdout, &capture).await;
        assert!(source.is_empty(), "everything was read");
        let outcome = run(capture);
        assert_eq!((outcome.stdout.as_str(), outcome.stdout_truncated), ("abgh", true));
        assert_eq!(outcome.stdout_omitted, Some(Omitted { offset: 2, bytes: 4 }));
    }

    #[tokio::test]
    async fn invalid_utf8_is_replaced() {
        let capture = Capture::new(16, None);
        let mut source: &[u8] = b"ok \xff\xfe";
        drain(Some(&mut source), Stream::Stdout, &capture).await;
        let outcome = run(capture);
        assert_eq!((outcome.stdout.as_str(), outcome.stdout_omitted), ("ok \u{fffd}\u{fffd}", None));
    }

    #[tokio::test]
    async fn live_entries_never_split_a_character_and_end_with_the_gap_and_tail() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let capture = Capture::new(8, Some(tx));
        let euro = "€".as_bytes();
        capture.push(Stream::Stderr, &[b'a', euro[0]]);
        capture.push(Stream::Stderr, &euro[1..]);
        capture.push(Stream::Stderr, b"0123456789");
        run(capture);
        let entries: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok())
            .filter_map(|chunk| match chunk {
                OutputChunk::Entry(entry) => Some(entry),
                OutputChunk::Tail(_) => None,
            })
            .collect();
        let kinds: Vec<_> = entries.iter().map(|e| (e.seq, e.offset, e.kind.clone())).collect();
        assert_eq!(
            kinds,
            [
                (1, 0, EntryKind::Data(b"a".to_vec())),
                (2, 1, EntryKind::Data(euro.to_vec())),
                (3, 4, EntryKind::Gap { bytes: 6 }),
                (4, 10, EntryKind::Data(b"6789".to_vec())),
            ]
        );
    }
}
