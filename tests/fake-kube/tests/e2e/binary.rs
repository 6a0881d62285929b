//! The `fake-kube` binary as a black-box e2e suite would drive it: flags, the two URL lines,
//! the kubeconfig, the control API on its own port, and a clean SIGTERM shutdown.

use std::process::Stdio;
use std::time::Duration;

use axum::http::{Method, Request};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{AttachParams, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio::time::timeout;

/// Sends a control request (JSON body or none) and returns the JSON answer (`null` if empty).
async fn control(client: &Client, method: Method, path: &str, body: Option<Value>) -> Value {
    let request = Request::builder().method(method).uri(path).header("content-type", "application/json");
    let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let text = client.request_text(request.body(body).unwrap()).await.unwrap();
    if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() }
}

#[tokio::test]
async fn binary_serves_seeded_pods_and_a_control_api() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let scratch = tempfile::tempdir().unwrap();
    let kubeconfig = scratch.path().join("kubeconfig");
    let pod_b =
        json!({ "namespace": "rdev", "name": "pod-b", "containers": ["app"], "phase": "Pending", "ready": false });
    let mut child = Command::new(env!("CARGO_BIN_EXE_fake-kube"))
        .args(["--namespace", "rdev", "--pod", "pod-a=hello", "--pod-json", &pod_b.to_string()])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let api_url = timeout(Duration::from_secs(30), lines.next_line()).await.unwrap().unwrap().unwrap();
    let control_url = lines.next_line().await.unwrap().unwrap();
    assert!(api_url.starts_with("http://127.0.0.1:"), "{api_url}");

    let config =
        Config::from_custom_kubeconfig(Kubeconfig::read_from(&kubeconfig).unwrap(), &KubeConfigOptions::default())
            .await
            .unwrap();
    assert_eq!(config.cluster_url.to_string().trim_end_matches('/'), api_url);
    let pods: Api<Pod> = Api::default_namespaced(Client::try_from(config).unwrap());
    let projects = pods.list(&ListParams::default().labels("rdev.orchard9.ai/project-id=hello")).await.unwrap();
    assert_eq!(projects.items.len(), 1);
    assert_eq!(pods.get("pod-b").await.unwrap().status.unwrap().phase.as_deref(), Some("Pending"));

    let controller = Client::try_from(Config::new(control_url.parse().unwrap())).unwrap();
    let seeded = control(&controller, Method::GET, "/_fake/pods", None).await;
    let dir_a = seeded.as_array().unwrap().iter().find(|p| p["name"] == "pod-a").unwrap()["dir"].clone();
    let params = AttachParams::default().container("main").stdout(true).stderr(false);
    let mut process = pods.exec("pod-a", ["pwd"], &params).await.unwrap();
    let mut pwd = String::new();
    process.stdout().unwrap().read_to_string(&mut pwd).await.unwrap();
    assert_eq!(pwd.trim_end(), dir_a.as_str().unwrap());

    let added = json!({ "namespace": "rdev", "name": "pod-c", "labels": { "team": "x" } });
    let created = control(&controller, Method::POST, "/_fake/pods", Some(added)).await;
    assert_eq!(created["containers"], json!([]));
    assert_eq!(pods.list(&ListParams::default().labels("team=x")).await.unwrap().items.len(), 1);
    control(&controller, Method::DELETE, "/_fake/pods/rdev/pod-c", None).await;
    assert!(pods.get_opt("pod-c").await.unwrap().is_none());

    let refuse = json!({ "fault": "refuse" });
    assert_eq!(control(&controller, Method::PUT, "/_fake/fault", Some(refuse.clone())).await, refuse);
    assert!(Api::<Pod>::default_namespaced(fresh_client(&api_url)).get("pod-a").await.is_err());
    let requests = control(&controller, Method::GET, "/_fake/requests", None).await["requests"].as_u64().unwrap();
    control(&controller, Method::PUT, "/_fake/fault", Some(json!({ "fault": "none" }))).await;
    assert!(pods.get("pod-a").await.is_ok());
    let after = control(&controller, Method::GET, "/_fake/requests", None).await["requests"].as_u64().unwrap();
    assert!(after > requests);

    // SIGTERM: a clean exit that removes the pods' folders.
    kill(Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap()), Signal::SIGTERM).unwrap();
    let status = timeout(Duration::from_secs(10), child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
    assert!(!std::path::Path::new(dir_a.as_str().unwrap()).exists());
}

fn fresh_client(url: &str) -> Client {
    let mut config = Config::new(url.parse().unwrap());
    config.default_namespace = "rdev".to_owned();
    Client::try_from(config).unwrap()
}
