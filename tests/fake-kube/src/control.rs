//! Owns the control HTTP API under `/_fake/`, a prefix the real Kubernetes API never uses, so a
//! black-box test can add and remove pods, switch faults and read the request counter.
//! Control requests are neither counted nor subject to faults.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::Fault;
use crate::pods::PodSpec;
use crate::server::Shared;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/_fake/pods", get(list_pods).post(add_pod))
        .route("/_fake/pods/{namespace}/{name}", delete(remove_pod))
        .route("/_fake/fault", get(get_fault).put(set_fault))
        .route("/_fake/requests", get(requests))
        .route("/_fake/protocols", axum::routing::put(set_protocols))
        .with_state(shared)
}

/// A pod as the control API shows it: the spec plus its folder.
#[derive(Serialize)]
struct PodView {
    #[serde(flatten)]
    spec: PodSpec,
    dir: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct FaultBody {
    fault: Fault,
}

fn error(code: StatusCode, message: String) -> Response {
    (code, Json(json!({ "error": message }))).into_response()
}

async fn list_pods(State(shared): State<Arc<Shared>>) -> Json<Vec<PodView>> {
    Json(shared.pods.all().into_iter().map(|(spec, dir)| PodView { spec, dir }).collect())
}

async fn add_pod(State(shared): State<Arc<Shared>>, Json(spec): Json<PodSpec>) -> Response {
    match shared.pods.add(spec.clone()) {
        Ok(dir) => (StatusCode::CREATED, Json(PodView { spec, dir })).into_response(),
        Err(err) => error(StatusCode::BAD_REQUEST, err.to_string()),
    }
}

async fn remove_pod(State(shared): State<Arc<Shared>>, Path((namespace, name)): Path<(String, String)>) -> Response {
    if shared.pods.remove(&namespace, &name) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(StatusCode::NOT_FOUND, format!("no pod {namespace}/{name}"))
    }
}

async fn get_fault(State(shared): State<Arc<Shared>>) -> Json<FaultBody> {
    Json(FaultBody { fault: shared.fault() })
}

async fn set_fault(State(shared): State<Arc<Shared>>, Json(body): Json<FaultBody>) -> Response {
    match shared.set_fault(body.fault).await {
        Ok(()) => Json(FaultBody { fault: body.fault }).into_response(),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("could not switch fault: {err}")),
    }
}

async fn requests(State(shared): State<Arc<Shared>>) -> Json<serde_json::Value> {
    Json(json!({ "requests": shared.requests() }))
}

#[derive(Deserialize)]
struct ProtocolsBody {
    v4_only: bool,
}

async fn set_protocols(State(shared): State<Arc<Shared>>, Json(body): Json<ProtocolsBody>) -> Json<serde_json::Value> {
    shared.set_v4_only(body.v4_only);
    Json(json!({ "v4_only": body.v4_only }))
}
