//! `ProjectSource` over labelled pods. Several pods for one id (a rollout, a crash loop): the
//! best one wins, Running and Ready first, then the newest.

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, api::ListParams};

use super::{CONTAINER_ANNOTATION, PROJECT_ID_LABEL, PROJECT_LABEL, errors::kube_error};
use crate::{
    domain::{DomainError, ExecutorKind, Project, ProjectId, ProjectStatus},
    ports::ProjectSource,
};

pub struct KubeProjects {
    pods: Api<Pod>,
    namespace: String,
}

impl KubeProjects {
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Self { pods: Api::namespaced(client, namespace), namespace: namespace.to_owned() }
    }

    #[tracing::instrument(name = "kube pods.list", skip(self), fields(namespace = %self.namespace))]
    async fn pods(&self, selector: &str) -> Result<Vec<Project>, DomainError> {
        let pods =
            self.pods.list(&ListParams::default().labels(selector)).await.map_err(|e| kube_error("listing pods", e))?;
        let mut best: std::collections::BTreeMap<ProjectId, (u8, Project)> = Default::default();
        for pod in &pods.items {
            let Some((rank, project)) = self.project_of(pod) else { continue };
            let better = best
                .get(&project.id)
                .is_none_or(|(held, current)| (rank, project.created_at) > (*held, current.created_at));
            if better {
                best.insert(project.id.clone(), (rank, project));
            }
        }
        Ok(best.into_values().map(|(_, project)| project).collect())
    }

    /// The project a pod stands for, with a rank: higher is a better pod to run commands in.
    fn project_of(&self, pod: &Pod) -> Option<(u8, Project)> {
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
            namespace: Some(self.namespace.clone()),
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
}

#[async_trait]
impl ProjectSource for KubeProjects {
    async fn list(&self) -> Result<Vec<Project>, DomainError> {
        self.pods(&format!("{PROJECT_LABEL}=true")).await
    }

    async fn get(&self, id: &ProjectId) -> Result<Option<Project>, DomainError> {
        // ProjectId's alphabet is a subset of label values', so it can go into a selector as is.
        Ok(self.pods(&format!("{PROJECT_LABEL}=true,{PROJECT_ID_LABEL}={id}")).await?.into_iter().next())
    }
}
