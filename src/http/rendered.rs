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

use super::error::ApiError;
use crate::domain::DomainError;

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
    /// A serialization error (none for plain data) is a 500, as with `Json`.
    pub fn json(&self, value: T) -> Response {
        match self.body(value) {
            Ok(body) => ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response(),
            Err(error) => ApiError::from(DomainError::internal(error)).into_response(),
        }
    }

    fn body(&self, value: T) -> Result<Bytes, serde_json::Error> {
        if let Some((_, body)) = self.lock().as_ref().filter(|(last, _)| *last == value) {
            return Ok(body.clone());
        }
        // Rendered outside the lock.
        let body = Bytes::from(serde_json::to_vec(&value)?);
        *self.lock() = Some((value, body.clone()));
        Ok(body)
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
        let first = rendered.body(vec!["a".to_owned()]).unwrap();
        assert_eq!(&first[..], br#"["a"]"#);
        let again = rendered.body(vec!["a".to_owned()]).unwrap();
        assert_eq!(first.as_ptr(), again.as_ptr(), "the same bytes, not a new rendering");
        assert_eq!(&rendered.body(vec!["b".to_owned()]).unwrap()[..], br#"["b"]"#);
    }
}
