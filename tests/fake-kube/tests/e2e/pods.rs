//! Pod list/get through kube-rs: label selectors, the fields rdev-api reads, 404s, kubeconfig.

use fake_kube::PodSpec;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use crate::support::{NS, PROJECT, client, fake, pods, project_pod};

fn names(list: &kube::core::ObjectList<Pod>) -> Vec<String> {
    list.items.iter().filter_map(|pod| pod.metadata.name.clone()).collect()
}

#[tokio::test]
async fn list_filters_by_label_selector() {
    let kube = fake().await;
    kube.add_pod(project_pod("pod-b", "world").phase("Pending").ready(false)).unwrap();
    kube.add_pod(PodSpec::new(NS, "not-a-project").label("app", "db")).unwrap();
    let mut elsewhere = project_pod("elsewhere", "x");
    elsewhere.namespace = "other".to_owned();
    kube.add_pod(elsewhere).unwrap();
    let api = pods(&kube);

    let projects = api.list(&ListParams::default().labels(&format!("{PROJECT}=true"))).await.unwrap();
    assert_eq!(names(&projects), ["pod-a", "pod-b"]);
    assert!(projects.metadata.resource_version.is_some_and(|rv| !rv.is_empty()));

    let hello = api.list(&ListParams::default().labels("rdev.orchard9.ai/project-id=hello")).await.unwrap();
    assert_eq!(names(&hello), ["pod-a"]);
    let anded = api.list(&ListParams::default().labels(&format!("{PROJECT},rdev.orchard9.ai/project-id!=hello"))).await;
    assert_eq!(names(&anded.unwrap()), ["pod-b"]);
    let without = api.list(&ListParams::default().labels(&format!("!{PROJECT}"))).await.unwrap();
    assert_eq!(names(&without), ["not-a-project"]);
    assert_eq!(names(&api.list(&ListParams::default()).await.unwrap()).len(), 3);
    let everywhere: Api<Pod> = Api::all(client(&kube));
    assert_eq!(names(&everywhere.list(&ListParams::default()).await.unwrap()).len(), 4);
}

#[tokio::test]
async fn get_returns_a_typed_pod_with_status() {
    let kube = fake().await;
    kube.add_pod(project_pod("pod-b", "world").phase("Pending").ready(false)).unwrap();
    let api = pods(&kube);

    let pod = api.get("pod-a").await.unwrap();
    let meta = &pod.metadata;
    assert_eq!(meta.namespace.as_deref(), Some(NS));
    assert_eq!(meta.labels.as_ref().unwrap()["rdev.orchard9.ai/project-id"], "hello");
    assert_eq!(meta.annotations.as_ref().unwrap()["rdev.orchard9.ai/container"], "main");
    assert!(meta.uid.as_ref().is_some_and(|uid| uid.len() == 36));
    assert!(meta.creation_timestamp.is_some());
    let containers: Vec<_> = pod.spec.as_ref().unwrap().containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(containers, ["main"]);
    let status = pod.status.as_ref().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    let ready = status.conditions.as_ref().unwrap().iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.status, "True");

    let pending = api.get("pod-b").await.unwrap();
    let status = pending.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    assert_eq!(status.conditions.unwrap()[0].status, "False");
}

#[tokio::test]
async fn missing_pod_is_a_404_status() {
    let kube = fake().await;
    let api = pods(&kube);
    let kube::Error::Api(status) = api.get("nope").await.unwrap_err() else { panic!("not an API error") };
    assert_eq!(status.code, 404);
    assert_eq!(status.reason, "NotFound");
    assert_eq!(status.message, "pods \"nope\" not found");
    assert!(status.is_not_found());
    assert!(api.get_opt("nope").await.unwrap().is_none());
}

#[tokio::test]
async fn removed_pod_disappears_with_its_folder() {
    let kube = fake().await;
    let dir = kube.pod_dir(NS, "pod-a").unwrap();
    assert!(dir.is_dir());
    assert!(kube.remove_pod(NS, "pod-a"));
    assert!(!kube.remove_pod(NS, "pod-a"));
    assert!(!dir.exists());
    assert!(kube.pod_dir(NS, "pod-a").is_none());
    assert!(pods(&kube).get_opt("pod-a").await.unwrap().is_none());
}

#[tokio::test]
async fn written_kubeconfig_is_what_kube_rs_loads() {
    let kube = fake().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let file = tempfile::NamedTempFile::new().unwrap();
    kube.write_kubeconfig(file.path(), NS).unwrap();

    let kubeconfig = Kubeconfig::read_from(file.path()).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    assert_eq!(config.default_namespace, NS);
    assert_eq!(config.cluster_url.to_string().trim_end_matches('/'), kube.url());
    let api: Api<Pod> = Api::default_namespaced(Client::try_from(config).unwrap());
    assert_eq!(names(&api.list(&ListParams::default()).await.unwrap()), ["pod-a"]);
}
