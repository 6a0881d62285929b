//! Owns the shared test setup: a fake with rdev-style pods and kube clients pointed at it.

use std::time::Duration;

use fake_kube::{FakeKube, PodSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client, Config};

pub const NS: &str = "rdev";
pub const PROJECT: &str = "rdev.orchard9.ai/project";

/// An rdev project pod in `NS` with container `main`.
pub fn project_pod(name: &str, project_id: &str) -> PodSpec {
    PodSpec::new(NS, name)
        .label(PROJECT, "true")
        .label("rdev.orchard9.ai/project-id", project_id)
        .annotation("rdev.orchard9.ai/container", "main")
        .container("main")
        .phase("Running")
        .ready(true)
}

/// A fake holding `pod-a` (project `hello`).
pub async fn fake() -> FakeKube {
    let kube = FakeKube::start().await.unwrap();
    kube.add_pod(project_pod("pod-a", "hello")).unwrap();
    kube
}

pub fn client(kube: &FakeKube) -> Client {
    client_with(kube, |_| {})
}

/// A fresh client (own connection pool) after `tweak` adjusted its config.
pub fn client_with(kube: &FakeKube, tweak: impl FnOnce(&mut Config)) -> Client {
    // kube builds its TLS stack from the process-wide rustls provider, even for plain HTTP.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = Config::new(kube.url().parse().unwrap());
    config.default_namespace = NS.to_owned();
    config.connect_timeout = Some(Duration::from_secs(5));
    tweak(&mut config);
    Client::try_from(config).unwrap()
}

pub fn pods(kube: &FakeKube) -> Api<Pod> {
    Api::default_namespaced(client(kube))
}
