//! Terminals: an interactive shell in a project, over a WebSocket. Its size, the client's input,
//! the single-use tickets a browser opens one with, and what the audit log says at its end.

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use rand::{RngExt, distr::Alphanumeric};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{DomainError, ProjectId, Unauthenticated};

/// How long a ticket may wait for its WebSocket.
pub const TICKET_LIFETIME: Duration = Duration::from_secs(30);

/// The largest side of a terminal, in cells: more than any screen, less than what a hostile
/// client could make a program allocate with.
pub const MAX_TERMINAL_SIDE: u16 = 1000;

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalSize {
    pub cols: u16,
    pub rows: u16,
}

impl Default for TerminalSize {
    fn default() -> Self {
        Self { cols: 80, rows: 24 }
    }
}

impl TerminalSize {
    /// A size of 1 to [`MAX_TERMINAL_SIDE`] cells each way.
    pub fn new(cols: u32, rows: u32) -> Result<Self, DomainError> {
        let side = |name: &str, value: u32| {
            u16::try_from(value)
                .ok()
                .filter(|v| (1..=MAX_TERMINAL_SIDE).contains(v))
                .ok_or_else(|| DomainError::invalid(name, format!("must be 1 to {MAX_TERMINAL_SIDE}")))
        };
        Ok(Self { cols: side("cols", cols)?, rows: side("rows", rows)? })
    }
}

/// What the client sends a running terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminalInput {
    /// Keystrokes (or pasted text), as bytes.
    Keys(Bytes),
    Resize(TerminalSize),
}

/// The answer to `POST /projects/{id}/terminal/tickets`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IssuedTicket {
    /// Pass as `?ticket=` to `GET /projects/{id}/terminal` within 30 s; it works once.
    pub ticket: String,
    pub expires_at: DateTime<Utc>,
}

/// A ticket as stored: only its hash, and what it was issued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTicket {
    pub hash: String,
    pub api_key_id: Uuid,
    pub project_id: ProjectId,
    pub expires_at: DateTime<Utc>,
}

/// A ticket's secret: `rdt_` and 43 random letters and digits (256 bits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketSecret(String);

impl TicketSecret {
    const PREFIX: &'static str = "rdt_";
    const RANDOM_CHARS: usize = 43;

    pub fn generate() -> Self {
        let random: String = rand::rng().sample_iter(Alphanumeric).take(Self::RANDOM_CHARS).map(char::from).collect();
        Self(format!("{}{random}", Self::PREFIX))
    }

    /// Checks the shape, so a malformed ticket costs no database work.
    pub fn parse(raw: &str) -> Result<Self, Unauthenticated> {
        let body = raw.strip_prefix(Self::PREFIX).ok_or(Unauthenticated::Malformed)?;
        if body.len() == Self::RANDOM_CHARS && body.bytes().all(|b| b.is_ascii_alphanumeric()) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(Unauthenticated::Malformed)
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What is stored: a leaked table holds no usable ticket.
    pub fn hash(&self) -> String {
        super::apikey::hex(&Sha256::digest(self.0.as_bytes()))
    }
}

/// How a terminal ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminalEnding {
    /// The shell exited with this status.
    Exited(i32),
    /// The client closed the socket (or went away).
    ClientClosed,
    /// Nothing went either way for `RDEV_TERMINAL_IDLE_TIMEOUT`.
    Idle,
    /// The executor failed under it.
    Failed,
    /// Its key was revoked or expired, or the secret it was opened with rotated out.
    KeyEnded(Unauthenticated),
    /// It lived `RDEV_TERMINAL_MAX_LIFETIME`.
    Lifetime,
}

/// A terminal's end, for the audit log and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalSummary {
    pub ending: TerminalEnding,
    pub duration: Duration,
    /// Keystrokes received from the client.
    pub bytes_in: u64,
    /// Terminal output sent to the client.
    pub bytes_out: u64,
}

impl TerminalSummary {
    /// The audit row's text.
    pub fn describe(&self) -> String {
        let how = match self.ending {
            TerminalEnding::Exited(code) => format!("shell exited with {code}"),
            TerminalEnding::ClientClosed => "closed by the client".to_owned(),
            TerminalEnding::Idle => "idle timeout".to_owned(),
            TerminalEnding::Failed => "the executor failed".to_owned(),
            TerminalEnding::KeyEnded(why) => format!("closed: {why}"),
            TerminalEnding::Lifetime => "maximum lifetime reached".to_owned(),
        };
        format!(
            "terminal ended: {how}; {:.1} s, {} bytes in, {} bytes out",
            self.duration.as_secs_f64(),
            self.bytes_in,
            self.bytes_out
        )
    }
}

/// A client's text frame: only resizes are defined.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ControlFrame {
    Resize { cols: u32, rows: u32 },
}

impl ControlFrame {
    /// The input a text frame stands for, or why it is refused.
    pub fn parse(text: &str) -> Result<TerminalInput, DomainError> {
        let frame: Self = serde_json::from_str(text).map_err(|e| {
            DomainError::invalid("frame", format!("text frames must be {{\"type\":\"resize\",\"cols\",\"rows\"}}: {e}"))
        })?;
        match frame {
            Self::Resize { cols, rows } => Ok(TerminalInput::Resize(TerminalSize::new(cols, rows)?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_bounded() {
        assert_eq!(TerminalSize::new(80, 24).unwrap(), TerminalSize { cols: 80, rows: 24 });
        assert!(TerminalSize::new(0, 24).is_err());
        assert!(TerminalSize::new(80, 1001).is_err());
        assert!(TerminalSize::new(70_000, 24).is_err());
    }

    #[test]
    fn tickets_round_trip_and_malformed_ones_are_refused() {
        let ticket = TicketSecret::generate();
        assert_eq!(TicketSecret::parse(ticket.expose()).unwrap(), ticket);
        assert_eq!(ticket.hash().len(), 64);
        for bad in [
            "",
            "rdt_",
            "rdt_short",
            "rdev_0123456789012345678901234567890123456789012",
            &format!("{}!", &ticket.0[..46]),
        ] {
            assert!(TicketSecret::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn text_frames_are_resizes_or_refused() {
        assert_eq!(
            ControlFrame::parse(r#"{"type":"resize","cols":100,"rows":30}"#).unwrap(),
            TerminalInput::Resize(TerminalSize { cols: 100, rows: 30 })
        );
        for bad in ["", "{}", r#"{"type":"resize","cols":0,"rows":3}"#, r#"{"type":"paste","text":"x"}"#] {
            assert!(ControlFrame::parse(bad).is_err(), "{bad}");
        }
    }
}
