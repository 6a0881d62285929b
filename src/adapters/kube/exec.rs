//! Starting a pod exec and reading its status: what the executor and the file API share.

use std::time::Duration;

use k8s_openapi::{api::core::v1::Pod, apimachinery::pkg::apis::meta::v1::Status};
use kube::{
    Api,
    api::{AttachParams, AttachedProcess},
};

use super::errors::kube_error;
use crate::domain::{DomainError, Project};

/// Starts `argv` in the project's container (stdout and stderr attached, stdin when asked),
/// within `api_timeout`.
pub(super) async fn attach(
    pods: &Api<Pod>,
    project: &Project,
    argv: Vec<String>,
    stdin: bool,
    api_timeout: Duration,
) -> Result<AttachedProcess, DomainError> {
    let params = AttachParams::default().stdin(stdin).stdout(true).stderr(true);
    attach_with(pods, project, argv, params, api_timeout).await
}

/// Starts `argv` in the project's container with `params` (its container set here).
pub(super) async fn attach_with(
    pods: &Api<Pod>,
    project: &Project,
    argv: Vec<String>,
    mut params: AttachParams,
    api_timeout: Duration,
) -> Result<AttachedProcess, DomainError> {
    let pod = project.pod.as_deref().ok_or_else(|| DomainError::not_found("project", project.id.as_str()))?;
    if let Some(container) = &project.container {
        params = params.container(container.clone());
    }
    tokio::time::timeout(api_timeout, pods.exec(pod, argv, &params))
        .await
        .map_err(|_| DomainError::executor_unavailable("starting pod exec: the Kubernetes API did not answer in time"))?
        .map_err(|e| kube_error("starting pod exec", e))
}

/// The exit code a status reports, or why it reports none.
pub(super) fn exit_code(status: &Status) -> Result<i32, DomainError> {
    if status.status.as_deref() == Some("Success") {
        return Ok(0);
    }
    let causes = status.details.as_ref().and_then(|d| d.causes.as_ref());
    let code = causes
        .and_then(|causes| causes.iter().find(|c| c.reason.as_deref() == Some("ExitCode")))
        .and_then(|cause| cause.message.as_deref()?.parse().ok());
    code.ok_or_else(|| {
        let message = status.message.as_deref().unwrap_or_default();
        let reason = status.reason.as_deref().unwrap_or_default();
        DomainError::internal(anyhow::anyhow!("pod exec failed: {message} ({reason})"))
    })
}
