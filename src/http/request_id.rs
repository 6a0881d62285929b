//! `X-Request-Id`: a client's own id is kept when it is fit to echo, log and store; otherwise
//! the server makes one.
//!
//! A made id is this process's random prefix and a counter (`5f0c9a2e41d7b3c8-1a2b`): unique
//! across replicas and restarts (64 random bits a process), ordered within one, and a few
//! instructions to make where a UUID v4 costs random bytes and formatting on every request.

use std::{
    io::Write as _,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use axum::http::{HeaderMap, HeaderName, HeaderValue};

/// The header, parsed once: looking a header up by `&str` parses the name on every call.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest request id a client may choose; it is echoed, logged and stored with every row.
const MAX_REQUEST_ID_CHARS: usize = 128;

/// Drops a client's `X-Request-Id` unless it is 1 to 128 visible ASCII characters, so the
/// edge makes one instead: a request id is echoed, logged and audited, and must not carry
/// 60 KB or control characters into any of them.
pub fn drop_unfit_request_id(headers: &mut HeaderMap) {
    let fits = |value: &HeaderValue| {
        let bytes = value.as_bytes();
        (1..=MAX_REQUEST_ID_CHARS).contains(&bytes.len()) && bytes.iter().all(|b| b.is_ascii_graphic())
    };
    let mut ids = headers.get_all(&X_REQUEST_ID).iter();
    let fit = match (ids.next(), ids.next()) {
        (None, _) => true,
        (Some(only), None) => fits(only),
        (Some(_), Some(_)) => false,
    };
    if !fit {
        headers.remove(&X_REQUEST_ID);
    }
}

/// Makes `<process prefix>-<counter>` ids; clones share the counter.
#[derive(Clone)]
pub struct CountedRequestIds {
    prefix: u64,
    next: Arc<AtomicU64>,
}

impl CountedRequestIds {
    pub fn new() -> Self {
        let prefix = uuid::Uuid::new_v4().as_u64_pair().0;
        Self { prefix, next: Arc::new(AtomicU64::new(1)) }
    }

    pub(super) fn next_id(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut text = [0u8; 33];
        let len = write_hex(&mut text, self.prefix, n);
        // Hex digits and a dash only: always a valid header value.
        HeaderValue::from_bytes(&text[..len]).unwrap_or_else(|_| HeaderValue::from_static("0"))
    }
}

impl Default for CountedRequestIds {
    fn default() -> Self {
        Self::new()
    }
}

/// `prefix` as 16 hex digits, a dash, `n` in hex without leading zeros, written into `out`
/// (33 bytes hold the longest) without allocating; returns the length.
fn write_hex(out: &mut [u8; 33], prefix: u64, n: u64) -> usize {
    let mut rest = &mut out[..];
    // Cannot fail: the longest id is 33 bytes.
    let _ = write!(rest, "{prefix:016x}-{n:x}");
    33 - rest.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(prefix: u64, n: u64) -> String {
        let mut out = [0u8; 33];
        let len = write_hex(&mut out, prefix, n);
        String::from_utf8(out[..len].to_vec()).unwrap()
    }

    #[test]
    fn ids_are_the_prefix_and_the_counter_in_hex() {
        assert_eq!(text(0x5f0c_9a2e_41d7_b3c8, 0x1a2b), "5f0c9a2e41d7b3c8-1a2b");
        assert_eq!(text(0, 0), "0000000000000000-0");
        assert_eq!(text(u64::MAX, u64::MAX), format!("{}-{}", "f".repeat(16), "f".repeat(16)));
    }

    #[test]
    fn clones_share_one_counter_so_ids_never_repeat() {
        let ids = CountedRequestIds::new();
        let other = ids.clone();
        let (a, b, c) = (ids.next_id(), other.next_id(), ids.next_id());
        assert_ne!(a, b);
        assert_ne!(b, c);
        assert!(a.to_str().unwrap().ends_with("-1") && c.to_str().unwrap().ends_with("-3"), "{a:?} {c:?}");
        assert_ne!(CountedRequestIds::new().prefix, ids.prefix, "each process its own prefix");
    }
}
