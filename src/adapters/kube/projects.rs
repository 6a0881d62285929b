//! A labelled pod as a project, ranked: several pods for one id (a rollout, a crash loop), the
//! best one wins, Running and Ready first, then the newest (see `watch`).

use k8s_openapi::api::core::v1::Pod;

use super::{CONTAINER_ANNOTATION, PROJECT_ID_LABEL};
use crate::domain::{ExecutorKind, Project, ProjectId, ProjectStatus};

/// The project a pod stands for, with a rank: higher is a better pod to run commands in.
pub(super) fn project_of(pod: &Pod, namespace: &str) -> Option<(u8, Project)> {
    let labels = pod.metadata.labels.as_ref()?;
    let id = ProjectId::parse(labels.get(PROJECT_ID_LABEL)?).ok()?;
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Unknown");
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let (status, rank) = match (phase, ready) {
        ("Running", true) => (ProjectStatus::Running, 4),
        ("Running", false) => (ProjectStatus::Pending, 3),
        ("Pending", _) => (ProjectStatus::Pending, 2),
        ("Succeeded" | "Failed", _) => (ProjectStatus::Stopped, 0),
        _ => (ProjectStatus::Unknown, 1),
    };
    let annotated = pod.metadata.annotations.as_ref().and_then(|a| a.get(CONTAINER_ANNOTATION)).cloned();
    let first = pod.spec.as_ref().and_then(|spec| spec.containers.first()).map(|c| c.name.clone());
    let project = Project {
        name: id.as_str().to_owned(),
        id,
        status,
        executor: ExecutorKind::Kubernetes,
        namespace: Some(namespace.to_owned()),
        pod: pod.metadata.name.clone(),
        created_at: pod
            .metadata
            .creation_timestamp
            .as_ref()
            .and_then(|t| chrono::DateTime::from_timestamp_micros(t.0.as_microsecond())),
        container: annotated.or(first),
    };
    Some((rank, project))
}
