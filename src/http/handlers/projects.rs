//! `GET /projects` and `GET /projects/{id}`.

use axum::{Json, extract::State, response::Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    domain::{Project, ProjectId},
    http::{
        auth::{Authorized, scope},
        error::{ApiError, ErrorBody},
        extract::ApiPath,
        rendered::LastRendered,
        state::AppState,
    },
};

#[derive(PartialEq, Serialize, ToSchema)]
pub struct ProjectList {
    projects: Vec<Project>,
}

/// List projects
///
/// Folders under the projects folder, or the labelled pods of the namespace, by id. Scope
/// `projects:read`.
#[utoipa::path(
    get, path = "/projects", tag = "projects", security(("api_key" = [])),
    responses(
        (status = 200, body = ProjectList),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    )
)]
pub async fn list_projects(
    _auth: Authorized<scope::ProjectsRead>,
    State(state): State<AppState>,
) -> Result<Response, ApiError> {
    static RENDERED: LastRendered<ProjectList> = LastRendered::new();
    Ok(RENDERED.json(ProjectList { projects: state.projects.list().await? }))
}

/// Get a project
///
/// `404` with the message `project not found` when there is none. Scope `projects:read`.
#[utoipa::path(
    get, path = "/projects/{id}", tag = "projects", security(("api_key" = [])),
    params(("id" = String, Path, description = "Project id", pattern = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")),
    responses(
        (status = 200, body = Project),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "project not found", body = ErrorBody),
    )
)]
pub async fn get_project(
    _auth: Authorized<scope::ProjectsRead>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Project>, ApiError> {
    let id = ProjectId::parse(&id)?;
    Ok(Json(state.projects.get(&id).await?))
}
