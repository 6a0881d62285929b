//! Live output of a running command, for streaming it to the client as it arrives.

pub use crate::domain::Stream;

/// An entry of a command's output log as it is made: head bytes as they arrive, then, when the
/// streams end, the gap (if bytes were dropped) and the tail. Head text is split only on UTF-8
/// boundaries; invalid bytes are replaced when it is shown.
pub type OutputChunk = crate::domain::OutputEntry;

/// Where an executor sends output as it arrives, besides keeping it; `None` when nobody watches.
/// Unbounded, because what it carries is bounded by the output cap.
pub type OutputSink = Option<tokio::sync::mpsc::UnboundedSender<OutputChunk>>;
