//! `Idempotency-Key`: a client's name for one request, so that sending it again (after a lost
//! answer, on any replica) replays the first answer instead of running the command twice.

use sha2::{Digest, Sha256};

use super::{DomainError, apikey::hex};

pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;
/// How long a key is remembered.
pub const IDEMPOTENCY_KEY_RETENTION: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// A key as the client sent it: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let visible = raw.bytes().all(|b| b.is_ascii_graphic());
        if raw.is_empty() || raw.len() > MAX_IDEMPOTENCY_KEY_BYTES || !visible {
            return Err(DomainError::invalid(
                "Idempotency-Key",
                format!("must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} visible ASCII characters"),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What makes two requests the same request: a hash of the method, the path and the body (as
/// parsed and written back, so spacing and key order do not make a request different).
pub fn fingerprint(method: &str, path: &str, body: &str) -> String {
    let mut hash = Sha256::new();
    // Each part after its length, so no two different requests hash the same bytes.
    for part in [method, path, body] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    hex(&hash.finalize())
}

/// The answer given to the first request of a key, replayed to the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReply {
    pub status: u16,
    pub location: Option<String>,
    /// The JSON body.
    pub body: String,
}

/// What is stored under a key someone else reserved first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// The hash of the request that reserved it (method, path and body).
    pub fingerprint: String,
    /// `None` while that request is still being answered.
    pub reply: Option<StoredReply>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_different_path_or_body_is_a_different_request() {
        let base = fingerprint("POST", "/projects/a/shell", "{}");
        assert_eq!(base, fingerprint("POST", "/projects/a/shell", "{}"));
        assert_ne!(base, fingerprint("POST", "/projects/b/shell", "{}"));
        assert_ne!(base, fingerprint("POST", "/projects/a/shell", "{\"x\":1}"));
        assert_ne!(fingerprint("POST", "/a\nb", ""), fingerprint("POST", "/a", "b\n"), "parts cannot shift");
    }

    #[test]
    fn keys_are_visible_ascii_of_bounded_length() {
        assert!(IdempotencyKey::parse("req-42_retry:1").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
        for bad in ["", "with space", "tab\there", "é", &"k".repeat(256)] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{bad:?}");
        }
    }
}
