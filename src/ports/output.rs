//! Live output of a running command, for streaming it to the client as it arrives.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// A piece of output: text split only on UTF-8 boundaries (invalid bytes replaced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputChunk {
    pub stream: Stream,
    pub text: String,
}

/// Where an executor sends output as it arrives, besides keeping it; `None` when nobody watches.
/// Unbounded, because what it carries is bounded by the output cap.
pub type OutputSink = Option<tokio::sync::mpsc::UnboundedSender<OutputChunk>>;
