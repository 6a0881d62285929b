//! `LastRendered`: the JSON body of the last value answered, reused while the value is the
//! same. A list that changes rarely and is asked for often (`GET /projects`) then costs a
//! comparison instead of a serialization (dates formatted, strings escaped) per request.

use std::sync::Mutex;

use axum::{
    body::Bytes,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

/// Holds one value and its rendering; shared by every request (and every app in a process:
/// the body depends on the value alone, so sharing is safe).
pub struct LastRendered<T> {
    last: Mutex<Option<(T, Bytes)>>,
}

impl<T: PartialEq + Serialize> LastRendered<T> {
    pub const fn new() -> Self {
        Self { last: Mutex::new(None) }
    }

    /// `value` as an `application/json` response, rendered again only when it changed.
    pub fn json(&self, value: T) -> Response {
        let body = self.body(value);
        ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
    }

    fn body(&self, value: T) -> Bytes {
        if let Some((_, body)) = self.lock().as_ref().filter(|(last, _)| *last == value) {
            return body.clone();
        }
        // Rendered outside the lock; a serialization error (none for plain data) is answered
        // as Json would, with a 500.
        let body: Bytes = match serde_json::to_vec(&value) {
            Ok(bytes) => bytes.into(),
            Err(_) => return Bytes::new(),
        };
        *self.lock() = Some((value, body.clone()));
        body
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(T, Bytes)>> {
        self.last.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_value_reuses_its_body_and_a_new_one_is_rendered() {
        let rendered = LastRendered::new();
        let first = rendered.body(vec!["a".to_owned()]);
        assert_eq!(&first[..], br#"["a"]"#);
        let again = rendered.body(vec!["a".to_owned()]);
        assert_eq!(first.as_ptr(), again.as_ptr(), "the same bytes, not a new rendering");
        assert_eq!(&rendered.body(vec!["b".to_owned()])[..], br#"["b"]"#);
    }
}
