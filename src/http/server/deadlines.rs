//! Deadlines of a connection that hyper does not keep by itself.
//!
//! - A connection with no request in flight for `RDEV_HEADER_TIMEOUT` is closed, whatever its
//!   protocol: hyper's header deadline covers HTTP/1 only, so without this an HTTP/2 client that
//!   sends half a preface, or that answers PINGs and never asks anything, holds its connection
//!   forever. A request is in flight from its headers until its response body has been sent
//!   (or dropped), so a long download or event stream is never cut.
//! - A request body that brings nothing for `RDEV_HEADER_TIMEOUT` ends with an error
//!   (`tower_http::timeout::TimeoutBody`, restarted at every frame), which the handlers answer
//!   with 408: a client that stops sending holds neither a task nor what the task holds.

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use axum::body::Body;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::{sync::Notify, time::Instant};

/// Whether any cause in `error`'s chain is a request body that stopped arriving.
pub fn is_stalled_body(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = error.source();
    }
    false
}

/// `body`, failing once it brings nothing for `limit`.
pub fn limit_stalls(body: hyper::body::Incoming, limit: Duration) -> Body {
    Body::new(tower_http::timeout::TimeoutBody::new(limit, body))
}

/// The requests in flight on one connection and when the last one ended.
#[derive(Default)]
pub struct Activity {
    state: Mutex<State>,
    changed: Notify,
}

struct State {
    in_flight: usize,
    quiet_since: Instant,
}

impl Default for State {
    fn default() -> Self {
        Self { in_flight: 0, quiet_since: Instant::now() }
    }
}

impl Activity {
    /// A request has begun; it ends when the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.update(|state| state.in_flight += 1);
        InFlight(self.clone())
    }

    fn update(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()));
        self.changed.notify_waiters();
    }

    /// Since when nothing has been in flight; `None` while a request is.
    pub fn quiet_since(&self) -> Option<Instant> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        (state.in_flight == 0).then_some(state.quiet_since)
    }

    /// Completes once no request has been in flight for `limit`.
    pub async fn idle_for(&self, limit: Duration) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let quiet_until = {
                let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                (state.in_flight == 0).then(|| state.quiet_since + limit)
            };
            match quiet_until {
                Some(at) if at <= Instant::now() => return,
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }
}

/// One request in flight.
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.update(|state| {
            state.in_flight -= 1;
            state.quiet_since = Instant::now();
        });
    }
}

/// A response body that holds its request's `InFlight` until it is sent or dropped.
pub struct Tracked {
    inner: Body,
    _in_flight: InFlight,
}

impl Tracked {
    pub fn wrap(inner: Body, in_flight: InFlight) -> Body {
        Body::new(Self { inner, _in_flight: in_flight })
    }
}

impl HttpBody for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_with_nothing_in_flight() {
        let activity = Arc::new(Activity::default());
        let request = activity.begin();
        let idle = activity.idle_for(Duration::from_secs(10));
        tokio::pin!(idle);
        assert!(tokio::time::timeout(Duration::from_secs(60), idle.as_mut()).await.is_err(), "busy");
        drop(request);
        let ended = Instant::now();
        idle.await;
        assert_eq!(ended.elapsed(), Duration::from_secs(10));
    }
}
