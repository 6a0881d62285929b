//! The edge of every request, as one tower layer with a concrete future: the request id (a
//! client's kept when fit, else made; echoed on the response), the request's span, a panic
//! caught and answered 500, every error rendered in the API's JSON shape, and the HTTP metrics.
//!
//! Why one hand-written layer: these were seven (tower-http's request-id, trace and catch-panic
//! layers, two `from_fn` middlewares and two small maps), and on a cheap request their
//! per-request work was a large share of its cost: each `from_fn` boxes its future and clones
//! its inner service into a boxed `Next`, each layer moves the request and its future once more.
//! Here the request passes one `call` and the response one `poll`, with nothing allocated.

use std::{
    any::Any,
    convert::Infallible,
    future::Future,
    panic::{AssertUnwindSafe, catch_unwind},
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use axum::{
    extract::{MatchedPath, Request},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures_util::{FutureExt as _, future::CatchUnwind};
use tower::{Layer, Service};

use super::{
    error::render_error,
    metrics::{self, HttpMetrics, UNMATCHED_ROUTE},
    request_id::{CountedRequestIds, X_REQUEST_ID, drop_unfit_request_id},
};
use crate::telemetry;

/// Wraps every route in `Edge`.
#[derive(Clone, Default)]
pub struct EdgeLayer {
    ids: CountedRequestIds,
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge { inner, ids: self.ids.clone() }
    }
}

#[derive(Clone)]
pub struct Edge<S> {
    inner: S,
    ids: CountedRequestIds,
}

impl<S> Service<Request> for Edge<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = EdgeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> EdgeFuture<S::Future> {
        drop_unfit_request_id(request.headers_mut());
        let request_id = match request.headers().get(&X_REQUEST_ID) {
            Some(id) => id.clone(),
            None => {
                let id = self.ids.next_id();
                request.headers_mut().insert(X_REQUEST_ID, id.clone());
                id
            }
        };
        let route = request.extensions().get::<MatchedPath>().cloned();
        let method = metrics::method_index(request.method());
        let span = request_span(&request, &request_id, route.as_ref());
        // A handler's synchronous part runs in `call`: a panic there is caught too.
        let inner = {
            let _entered = span.enter();
            catch_unwind(AssertUnwindSafe(|| self.inner.call(request)))
        };
        let state = match inner {
            Ok(future) => State::Running { future: AssertUnwindSafe(future).catch_unwind() },
            Err(panic) => State::Panicked { panic: Some(panic) },
        };
        EdgeFuture { state, span, request_id, route, method, started: Instant::now() }
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F> {
        Running { #[pin] future: CatchUnwind<AssertUnwindSafe<F>> },
        Panicked { panic: Option<Box<dyn Any + Send>> },
    }
}

pin_project_lite::pin_project! {
    pub struct EdgeFuture<F> {
        #[pin]
        state: State<F>,
        span: tracing::Span,
        request_id: HeaderValue,
        route: Option<MatchedPath>,
        method: usize,
        started: Instant,
    }
}

impl<F> Future for EdgeFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let response = match this.state.project() {
            StateProj::Running { future } => match future.poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(Ok(response))) => response,
                Poll::Ready(Ok(Err(never))) => match never {},
                Poll::Ready(Err(panic)) => panicked(panic.as_ref()),
            },
            StateProj::Panicked { panic } => panic
                .take()
                .map_or_else(|| StatusCode::INTERNAL_SERVER_ERROR.into_response(), |panic| panicked(panic.as_ref())),
        };
        let elapsed = this.started.elapsed();
        let status = response.status();
        let route = this.route.as_ref().map_or(UNMATCHED_ROUTE, MatchedPath::as_str);
        HttpMetrics::shared().record(route, *this.method, status.as_u16(), elapsed.as_secs_f64());
        this.span.record("http.response.status_code", status.as_u16());
        if status.is_server_error() {
            this.span.record("otel.status_code", "ERROR");
            tracing::error!(status = status.as_u16(), latency_ms = elapsed.as_millis() as u64, "response failed");
        }
        let mut response = render_error(response, this.request_id);
        let headers = response.headers_mut();
        headers.insert(X_REQUEST_ID, this.request_id.clone());
        // Answers carry keys, secrets, output and files: no cache keeps them (the console sets
        // its own), and no browser reads one as anything but its declared type.
        headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
        headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        Poll::Ready(Ok(response))
    }
}

/// A panic in a handler is a 500 in the API's shape (rendered after this), and a log line.
fn panicked(panic: &(dyn Any + Send)) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    tracing::error!(panic = message, "a handler panicked");
    StatusCode::INTERNAL_SERVER_ERROR.into_response()
}

/// The span of one request: every log line inside carries its request id, and exported traces
/// get the OpenTelemetry HTTP server attributes, under the client's `traceparent` if it sent one.
/// A disabled span (logs above `info`, no exporter) costs a level check.
fn request_span(request: &Request, request_id: &HeaderValue, route: Option<&MatchedPath>) -> tracing::Span {
    let request_id = request_id.to_str().unwrap_or_default();
    let route = route.map_or(UNMATCHED_ROUTE, MatchedPath::as_str);
    let method = request.method().as_str();
    let span = tracing::info_span!(
        "request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = method,
        http.route = route,
        url.path = request.uri().path(),
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        request_id,
    );
    telemetry::propagation::adopt_remote_parent(&span, request.headers());
    span
}

#[cfg(test)]
mod tests {
    use axum::body::{Body, to_bytes};
    use tower::{ServiceExt as _, service_fn};

    use super::*;

    async fn through_edge<F, Fut>(handler: F, request: Request) -> Response
    where
        F: FnMut(Request) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<Response, Infallible>> + Send + 'static,
    {
        EdgeLayer::default().layer(service_fn(handler)).oneshot(request).await.unwrap()
    }

    async fn error_of(response: Response) -> serde_json::Value {
        let body = to_bytes(response.into_body(), 1 << 16).await.unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    fn get() -> Request {
        Request::builder().uri("/x").body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn a_panic_in_the_future_or_in_call_is_a_500_in_the_api_shape() {
        let in_future = through_edge(|_| async { panic!("boom") }, get()).await;
        let in_call =
            through_edge(|_| -> std::future::Ready<Result<Response, Infallible>> { panic!("boom in call") }, get())
                .await;
        for response in [in_future, in_call] {
            assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
            let id = response.headers()[&X_REQUEST_ID].to_str().unwrap().to_owned();
            let body = error_of(response).await;
            assert_eq!(body["error"]["code"], "INTERNAL");
            assert_eq!(body["error"]["request_id"], id.as_str());
        }
    }

    #[tokio::test]
    async fn a_plain_error_gets_the_json_shape_and_a_fit_client_id_is_echoed() {
        let request = Request::builder().uri("/x").header("x-request-id", "client-1").body(Body::empty()).unwrap();
        let response = through_edge(|_| async { Ok(StatusCode::NOT_FOUND.into_response()) }, request).await;
        assert_eq!(response.headers()[&X_REQUEST_ID], "client-1");
        let body = error_of(response).await;
        assert_eq!(body["error"]["code"], "NOT_FOUND");
        assert_eq!(body["error"]["request_id"], "client-1");
    }

    #[tokio::test]
    async fn the_handler_sees_the_id_the_response_carries_and_success_is_untouched() {
        let request =
            Request::builder().uri("/x").header("x-request-id", "bad id with spaces").body(Body::empty()).unwrap();
        let response = through_edge(
            |request: Request| async move {
                let seen = request.headers()[&X_REQUEST_ID].clone();
                Ok((StatusCode::OK, seen.to_str().unwrap().to_owned()).into_response())
            },
            request,
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        let id = response.headers()[&X_REQUEST_ID].to_str().unwrap().to_owned();
        assert_ne!(id, "bad id with spaces", "an unfit id is replaced");
        let body = to_bytes(response.into_body(), 1 << 16).await.unwrap();
        assert_eq!(&body[..], id.as_bytes());
    }
}
