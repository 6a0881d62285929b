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

/// A list in pages (`limit`, `continue`), as kube-rs's watcher asks for its first list: every
/// pod once, in order, each page with the first page's version, and the last without a token.
#[tokio::test]
async fn a_list_comes_in_pages_with_continue_tokens() {
    let kube = fake().await;
    for n in 0..6 {
        kube.add_pod(project_pod(&format!("pod-{n}"), &format!("p{n}"))).unwrap();
    }
    kube.add_pod(PodSpec::new(NS, "pod-x").label("app", "db")).unwrap();
    let api = pods(&kube);
    let selector = format!("{PROJECT}=true");

    let (mut seen, mut token, mut versions, mut pages) = (Vec::new(), None::<String>, Vec::new(), 0);
    loop {
        let mut params = ListParams::default().labels(&selector).limit(3);
        if let Some(token) = &token {
            params = params.continue_token(token);
        }
        let page = api.list(&params).await.unwrap();
        pages += 1;
        assert!(page.items.len() <= 3);
        seen.extend(names(&page));
        versions.push(page.metadata.resource_version.clone().unwrap());
        if pages == 1 {
            kube.add_pod(project_pod("pod-9", "late")).unwrap();
        }
        token = page.metadata.continue_.filter(|token| !token.is_empty());
        if token.is_none() {
            assert_eq!(page.metadata.remaining_item_count, None);
            break;
        }
        assert!(page.metadata.remaining_item_count.is_some_and(|n| n > 0));
    }
    // Pages run in name order; `pod-9`, created after the first page, is in a later one.
    assert_eq!(seen, ["pod-0", "pod-1", "pod-2", "pod-3", "pod-4", "pod-5", "pod-9", "pod-a"]);
    assert_eq!(pages, 3);
    assert!(versions.windows(2).all(|pair| pair[0] == pair[1]), "{versions:?}");

    let bad = api.list(&ListParams::default().continue_token("not-a-token")).await.unwrap_err();
    assert!(matches!(bad, kube::Error::Api(status) if status.code == 400));

    // kube-rs's watcher lists in pages of `page_size`: with 2, it still sees every pod once.
    let config = kube::runtime::watcher::Config::default().labels(&selector).page_size(2);
    let mut events = std::pin::pin!(kube::runtime::watcher(api, config));
    let mut listed = Vec::new();
    while let Some(event) = futures_util::StreamExt::next(&mut events).await {
        match event.unwrap() {
            kube::runtime::watcher::Event::InitApply(pod) => listed.push(pod.metadata.name.unwrap()),
            kube::runtime::watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(listed, seen);
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
