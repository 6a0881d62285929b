//! Owns the Kubernetes API surface: routes for listing and getting pods, the exec upgrade
//! (checks made before the WebSocket handshake, subprotocol choice), `/version`, and the
//! `Status` JSON bodies the real API server answers errors with.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, Path, Query, Request, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::exec::{self, Cut, ExecRequest, Protocol};
use crate::pods::Page;
use crate::selector::Selector;
use crate::server::Shared;
use crate::{Fault, control};

/// The API router, with the control routes mounted under `/_fake/` as well.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/api/v1/pods", get(list_all_pods))
        .route("/api/v1/namespaces/{namespace}/pods", get(list_pods))
        .route("/api/v1/namespaces/{namespace}/pods/{name}", get(get_pod))
        // kube-rs sends a GET upgrade; kubectl and client-go have used POST. Accept both.
        .route("/api/v1/namespaces/{namespace}/pods/{name}/exec", get(exec).post(exec))
        .fallback(not_found_route)
        .with_state(Arc::clone(&shared))
        .merge(control::router(shared))
}

/// A `metav1.Status` failure, the body of every error the real API server answers.
pub(crate) fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    (code, axum::Json(body)).into_response()
}

/// What every API request answers under [`Fault::Http500`].
pub(crate) fn internal_error() -> Response {
    status(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        "Internal error occurred: fake-kube fault injection (Http500)".to_owned(),
    )
}

fn pod_not_found(name: &str) -> Response {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("pods \"{name}\" not found"),
        "reason": "NotFound",
        "details": { "name": name, "kind": "pods" },
        "code": 404,
    });
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

fn bad_request(message: String) -> Response {
    status(StatusCode::BAD_REQUEST, "BadRequest", message)
}

async fn not_found_route() -> Response {
    status(StatusCode::NOT_FOUND, "NotFound", "the server could not find the requested resource".to_owned())
}

async fn version() -> Response {
    axum::Json(json!({
        "major": "1",
        "minor": "37",
        "gitVersion": "v1.37.0-fake-kube",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.25",
        "compiler": "gc",
        "platform": "linux/amd64",
    }))
    .into_response()
}

async fn list_all_pods(State(shared): State<Arc<Shared>>, Query(query): Query<HashMap<String, String>>) -> Response {
    list(&shared, None, &query)
}

async fn list_pods(
    State(shared): State<Arc<Shared>>,
    Path(namespace): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    list(&shared, Some(&namespace), &query)
}

fn list(shared: &Arc<Shared>, namespace: Option<&str>, query: &HashMap<String, String>) -> Response {
    let selector = match Selector::parse(query.get("labelSelector").map_or("", String::as_str)) {
        Ok(selector) => selector,
        Err(message) => return bad_request(message),
    };
    if query.get("watch").is_some_and(|watch| watch == "true" || watch == "1") {
        return crate::watch::respond(Arc::clone(shared), namespace.map(str::to_owned), selector, query);
    }
    let page = match Page::parse(query.get("limit").map(String::as_str), query.get("continue").map(String::as_str)) {
        Ok(page) => page,
        Err(message) => return bad_request(message),
    };
    axum::Json(shared.pods.list_json(namespace, &selector, &page)).into_response()
}

async fn get_pod(State(shared): State<Arc<Shared>>, Path((namespace, name)): Path<(String, String)>) -> Response {
    match shared.pods.get_json(&namespace, &name) {
        Some(pod) => axum::Json(pod).into_response(),
        None => pod_not_found(&name),
    }
}

/// The exec query: `command` repeats once per argv element, the rest are flags.
#[derive(Default)]
struct ExecQuery {
    command: Vec<String>,
    container: Option<String>,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

impl ExecQuery {
    fn parse(query: &str) -> Self {
        let mut parsed = Self::default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let flag = matches!(value.as_ref(), "true" | "1");
            match key.as_ref() {
                "command" => parsed.command.push(value.into_owned()),
                "container" => parsed.container = Some(value.into_owned()),
                "stdin" => parsed.stdin = flag,
                "stdout" => parsed.stdout = flag,
                "stderr" => parsed.stderr = flag,
                "tty" => parsed.tty = flag,
                _ => {}
            }
        }
        parsed
    }
}

/// `.../pods/{name}/exec`: every check the API server makes before upgrading answers a `Status`
/// (kube-rs surfaces those as `Error::Api`); then the WebSocket session runs the command.
async fn exec(
    State(shared): State<Arc<Shared>>,
    Path((namespace, name)): Path<(String, String)>,
    request: Request,
) -> Response {
    let (mut parts, _body) = request.into_parts();
    let query = ExecQuery::parse(parts.uri.query().unwrap_or(""));
    let Some((pod, dir)) = shared.pods.find(&namespace, &name) else {
        return pod_not_found(&name);
    };
    let containers = pod.container_names();
    let container = match (&query.container, containers.as_slice()) {
        (Some(wanted), _) if containers.contains(wanted) => wanted.clone(),
        (Some(wanted), _) => return bad_request(format!("container {wanted} is not valid for pod {name}")),
        (None, [only]) => only.clone(),
        (None, _) => {
            return bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            ));
        }
    };
    if matches!(pod.phase.as_str(), "Succeeded" | "Failed") {
        return bad_request(format!("cannot exec into a container in a completed pod; current phase is {}", pod.phase));
    }
    if query.command.is_empty() {
        return bad_request("you must specify at least 1 command".to_owned());
    }
    if !(query.stdin || query.stdout || query.stderr) {
        return bad_request("you must specify at least 1 of stdin, stdout, stderr".to_owned());
    }
    if query.tty && query.stderr {
        return bad_request("tty and stderr cannot both be true".to_owned());
    }
    let Some(protocol) = negotiate(&parts.headers, shared.v4_only()) else {
        return bad_request("unable to upgrade connection: no supported stream protocol offered".to_owned());
    };
    // axum's extractor only upgrades GET; the method carries no meaning for exec.
    if parts.method == Method::POST {
        parts.method = Method::GET;
    }
    let mut upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return bad_request(format!("Upgrade request required: {}", rejection.body_text())),
    };
    upgrade.set_selected_protocol(HeaderValue::from_static(protocol.name()));
    let request = ExecRequest {
        argv: query.command,
        container,
        dir,
        stdin: query.stdin,
        stdout: query.stdout,
        stderr: query.stderr,
        tty: query.tty,
        protocol,
        cut: match shared.fault() {
            Fault::DropMidStream => Some(Cut::Drop),
            Fault::CloseMidStream => Some(Cut::Close),
            _ => None,
        },
    };
    let count = shared.exec_started();
    let shutdown = shared.shutdown_signal();
    upgrade.on_upgrade(move |socket| exec::run(socket, request, shutdown, count))
}

/// Picks the first subprotocol the client offers that we speak, in the client's order.
fn negotiate(headers: &HeaderMap, v4_only: bool) -> Option<Protocol> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|offered| Protocol::from_name(offered.trim()))
        .find(|protocol| !v4_only || *protocol == Protocol::V4)
}
