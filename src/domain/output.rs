//! What is kept of a command's output, and the ordered log it is kept as.
//!
//! Per stream at most `max_output_bytes` are kept: the first half as it arrives (the head), the
//! last half once the stream ends (the tail, held in a ring meanwhile), and the middle dropped.
//! Every kept piece is an entry of one log per command, numbered by `seq` (1, 2, … across both
//! streams) with its byte `offset` in its own stream; where bytes were dropped the log has a
//! `Gap` entry saying how many. Followers, replays and resumes all read this log, so what a
//! live follower saw is exactly what a replay shows: head entries appear as they arrive, the
//! gap and the tail when the stream ends.

use std::collections::VecDeque;

use serde::Serialize;
use utoipa::ToSchema;

/// Smallest `max_output_bytes` a request may ask for.
pub const MIN_OUTPUT_BYTES: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub const BOTH: [Stream; 2] = [Stream::Stdout, Stream::Stderr];

    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::BOTH.into_iter().find(|s| s.as_str() == raw)
    }

    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

/// Where a stream's output was dropped: from `offset`, `bytes` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct Omitted {
    /// The first byte dropped, counted from the stream's start.
    pub offset: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// Kept bytes, from the entry's offset on.
    Data(Vec<u8>),
    /// Bytes dropped from the entry's offset on.
    Gap { bytes: u64 },
}

/// One entry of a command's output log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputEntry {
    pub seq: u64,
    pub stream: Stream,
    pub offset: u64,
    pub kind: EntryKind,
}

/// A stream's tail as it is now, stored now and then while the command runs so that a replica
/// that dies loses at most what came since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailSnapshot {
    pub stream: Stream,
    /// Where `data` starts in the stream.
    pub offset: u64,
    pub data: Vec<u8>,
}

/// What was kept of one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeptStream {
    /// The head, then the tail.
    pub bytes: Vec<u8>,
    pub omitted: Option<Omitted>,
}

impl KeptStream {
    /// As text: invalid UTF-8 (and a character cut where bytes were dropped) replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Turns a command's output, as it arrives, into log entries.
#[derive(Debug)]
pub struct OutputRecorder {
    next_seq: u64,
    streams: [Kept; 2],
}

#[derive(Debug)]
struct Kept {
    head_cap: u64,
    tail_cap: usize,
    /// Bytes written to the stream so far.
    written: u64,
    /// Head bytes entered in the log so far.
    head_logged: u64,
    /// Head bytes not entered yet: the start of a character whose other bytes are still to come.
    pending: Vec<u8>,
    /// Everything past the head, its last `tail_cap` bytes.
    ring: VecDeque<u8>,
    /// The head, kept for `kept()` (it is at most half of the budget).
    head: Vec<u8>,
}

impl OutputRecorder {
    /// For a command that may keep `max_output_bytes` per stream, its first entry numbered
    /// `first_seq`.
    pub fn new(max_output_bytes: usize, first_seq: u64) -> Self {
        let head_cap = max_output_bytes / 2;
        let kept = || Kept {
            head_cap: head_cap as u64,
            tail_cap: max_output_bytes - head_cap,
            written: 0,
            head_logged: 0,
            pending: Vec::new(),
            ring: VecDeque::new(),
            head: Vec::new(),
        };
        Self { next_seq: first_seq.max(1), streams: [kept(), kept()] }
    }

    /// Takes the next bytes of `stream`; the log entry they add, if any (head bytes, up to the
    /// last complete character unless the head just filled).
    pub fn push(&mut self, stream: Stream, bytes: &[u8]) -> Option<OutputEntry> {
        let kept = &mut self.streams[stream.index()];
        let room = (kept.head_cap - kept.head_logged) as usize - kept.pending.len();
        let (head_part, rest) = bytes.split_at(bytes.len().min(room));
        kept.written += bytes.len() as u64;
        kept.pending.extend_from_slice(head_part);
        kept.head.extend_from_slice(head_part);
        // The ring keeps the last `tail_cap` bytes: drop from its front what the new bytes push out.
        let rest = &rest[rest.len().saturating_sub(kept.tail_cap)..];
        let overflow = (kept.ring.len() + rest.len()).saturating_sub(kept.tail_cap);
        kept.ring.drain(..overflow);
        kept.ring.extend(rest);
        let head_full = kept.head_logged + kept.pending.len() as u64 == kept.head_cap;
        let upto = if head_full { kept.pending.len() } else { complete_prefix(&kept.pending) };
        if upto == 0 {
            return None;
        }
        let data: Vec<u8> = kept.pending.drain(..upto).collect();
        let offset = kept.head_logged;
        kept.head_logged += data.len() as u64;
        Some(self.entry(stream, offset, EntryKind::Data(data)))
    }

    /// Whether `stream` has outgrown its head (its tail is not empty).
    pub fn has_tail(&self, stream: Stream) -> bool {
        !self.streams[stream.index()].ring.is_empty()
    }

    /// The tail of `stream` as it is now, if it has one.
    pub fn tail(&self, stream: Stream) -> Option<TailSnapshot> {
        let kept = &self.streams[stream.index()];
        (!kept.ring.is_empty()).then(|| TailSnapshot {
            stream,
            offset: kept.written - kept.ring.len() as u64,
            data: kept.ring.iter().copied().collect(),
        })
    }

    /// What is kept of `stream` so far (head, then the tail as it is now).
    pub fn kept(&self, stream: Stream) -> KeptStream {
        let kept = &self.streams[stream.index()];
        let mut bytes = kept.head.clone();
        bytes.extend(kept.ring.iter());
        KeptStream { bytes, omitted: kept.omitted() }
    }

    /// The streams ended: the entries still to come (a held-back character, then per stream
    /// its gap, if bytes were dropped, and its tail).
    pub fn finish(&mut self) -> Vec<OutputEntry> {
        let mut entries = Vec::new();
        for stream in Stream::BOTH {
            let kept = &mut self.streams[stream.index()];
            if !kept.pending.is_empty() {
                let data = std::mem::take(&mut kept.pending);
                let offset = kept.head_logged;
                kept.head_logged += data.len() as u64;
                entries.push((stream, offset, EntryKind::Data(data)));
            }
        }
        for stream in Stream::BOTH {
            let kept = &self.streams[stream.index()];
            if let Some(omitted) = kept.omitted() {
                entries.push((stream, omitted.offset, EntryKind::Gap { bytes: omitted.bytes }));
            }
            if !kept.ring.is_empty() {
                let offset = kept.written - kept.ring.len() as u64;
                entries.push((stream, offset, EntryKind::Data(kept.ring.iter().copied().collect())));
            }
        }
        entries.into_iter().map(|(stream, offset, kind)| self.entry(stream, offset, kind)).collect()
    }

    fn entry(&mut self, stream: Stream, offset: u64, kind: EntryKind) -> OutputEntry {
        let seq = self.next_seq;
        self.next_seq += 1;
        OutputEntry { seq, stream, offset, kind }
    }
}

impl Kept {
    fn omitted(&self) -> Option<Omitted> {
        let dropped = self.written.saturating_sub(self.head_cap + self.ring.len() as u64);
        (dropped > 0).then_some(Omitted { offset: self.head_cap, bytes: dropped })
    }
}

/// How much of `bytes` ends on a character boundary: all of it, unless it ends with the start
/// of a multi-byte character whose other bytes may still come (invalid bytes count as whole:
/// they stay invalid whatever follows).
fn complete_prefix(bytes: &[u8]) -> usize {
    let is_continuation = |b: u8| b & 0b1100_0000 == 0b1000_0000;
    let Some(lead) = (bytes.len().saturating_sub(3)..bytes.len()).rev().find(|&i| !is_continuation(bytes[i])) else {
        return bytes.len();
    };
    let needed = match bytes[lead] {
        b if b & 0b1110_0000 == 0b1100_0000 => 2,
        b if b & 0b1111_0000 == 0b1110_0000 => 3,
        b if b & 0b1111_1000 == 0b1111_0000 => 4,
        _ => 1,
    };
    if bytes.len() - lead < needed { lead } else { bytes.len() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(entries: &[OutputEntry], stream: Stream) -> Vec<u8> {
        entries
            .iter()
            .filter(|e| e.stream == stream)
            .filter_map(|e| match &e.kind {
                EntryKind::Data(bytes) => Some(bytes.clone()),
                EntryKind::Gap { .. } => None,
            })
            .flatten()
            .collect()
    }

    #[test]
    fn keeps_the_first_and_last_halves_and_says_what_was_dropped() {
        let output: Vec<u8> = (0..200_000).flat_map(|n| format!("{n}\n").into_bytes()).collect();
        let mut recorder = OutputRecorder::new(4096, 1);
        let mut entries: Vec<_> = output.chunks(1000).filter_map(|c| recorder.push(Stream::Stdout, c)).collect();
        entries.extend(recorder.finish());
        let kept = data(&entries, Stream::Stdout);
        assert_eq!(&kept[..2048], &output[..2048]);
        assert_eq!(&kept[2048..], &output[output.len() - 2048..]);
        let gap = entries.iter().find(|e| matches!(e.kind, EntryKind::Gap { .. })).unwrap();
        assert_eq!((gap.offset, &gap.kind), (2048, &EntryKind::Gap { bytes: output.len() as u64 - 4096 }));
        assert_eq!(
            recorder.kept(Stream::Stdout).omitted,
            Some(Omitted { offset: 2048, bytes: output.len() as u64 - 4096 })
        );
        let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "numbered 1, 2, … without a hole");
    }

    #[test]
    fn output_within_the_budget_is_kept_whole_and_numbered_across_streams() {
        let mut recorder = OutputRecorder::new(1024, 7);
        let first = recorder.push(Stream::Stdout, b"out").unwrap();
        let second = recorder.push(Stream::Stderr, b"err").unwrap();
        assert_eq!((first.seq, first.offset, second.seq), (7, 0, 8));
        // Past the head (512), into the tail: kept, but entered only at the end.
        assert_eq!(recorder.push(Stream::Stdout, &[b'x'; 600]).map(|e| e.offset), Some(3));
        let end = recorder.finish();
        assert_eq!(end.len(), 1, "no gap: nothing was dropped");
        assert_eq!(recorder.tail(Stream::Stdout).map(|t| (t.offset, t.data.len())), Some((512, 91)));
        assert_eq!(recorder.tail(Stream::Stderr), None);
        assert_eq!((end[0].offset, end[0].seq), (512, 10));
        assert_eq!(recorder.kept(Stream::Stdout).bytes.len(), 603);
        assert_eq!(recorder.kept(Stream::Stdout).omitted, None);
    }

    #[test]
    fn a_character_split_between_reads_comes_whole() {
        let mut recorder = OutputRecorder::new(1024, 1);
        let euro = "€".as_bytes();
        let first = recorder.push(Stream::Stdout, &[b'a', euro[0]]).unwrap();
        assert_eq!(first.kind, EntryKind::Data(b"a".to_vec()));
        let second = recorder.push(Stream::Stdout, &euro[1..]).unwrap();
        assert_eq!((second.offset, second.kind), (1, EntryKind::Data(euro.to_vec())));
        // Invalid bytes are not held back for ever.
        assert!(recorder.push(Stream::Stdout, b"\xff\xfe ok").is_some());
        assert_eq!(complete_prefix(b"ok \xe2\x82"), 3, "a character still open waits");
        assert_eq!(complete_prefix(b"\xff\x82\x82\x82"), 4, "continuation bytes alone are whole");
        assert_eq!(complete_prefix("é".as_bytes()), 2);
    }
}
