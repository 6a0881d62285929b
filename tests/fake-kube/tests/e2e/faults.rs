//! Each fault as a kube-rs client sees it, and the request counter that proves whether a client
//! reached the server at all.

use std::time::Duration;

use fake_kube::Fault;
use kube::api::{AttachParams, ListParams};
use tokio::io::AsyncReadExt;
use tokio::time::timeout;

use crate::support::{client_with, fake, pods};

#[tokio::test]
async fn http500_answers_every_api_request_with_a_status() {
    let kube = fake().await;
    let api = pods(&kube);
    kube.set_fault(Fault::Http500).await.unwrap();
    for result in [api.get("pod-a").await.map(drop), api.list(&ListParams::default()).await.map(drop)] {
        let Err(kube::Error::Api(status)) = result else { panic!("expected a 500 Status, got {result:?}") };
        assert_eq!((status.code, status.reason.as_str()), (500, "InternalError"));
    }
    let exec = api.exec("pod-a", ["true"], &AttachParams::default().container("main")).await;
    assert!(matches!(exec, Err(kube::Error::Api(ref status)) if status.code == 500), "{:?}", exec.err());

    kube.set_fault(Fault::None).await.unwrap();
    assert!(api.get("pod-a").await.is_ok());
}

#[tokio::test]
async fn refuse_fails_new_and_pooled_connections_then_recovers_on_the_same_port() {
    let kube = fake().await;
    let pooled = pods(&kube);
    pooled.get("pod-a").await.unwrap(); // leaves a keep-alive connection in the pool
    let before = kube.requests();

    kube.set_fault(Fault::Refuse).await.unwrap();
    let fresh = pods(&kube);
    let error = fresh.get("pod-a").await.unwrap_err();
    let text = format!("{error:?}");
    assert!(text.contains("Connection refused") || text.contains("ConnectionRefused"), "{text}");
    assert_eq!(kube.requests(), before, "a refused connection never reaches the server");
    // The pooled connection is dropped without an answer (or refused on reconnect).
    assert!(pooled.get("pod-a").await.is_err());

    kube.set_fault(Fault::None).await.unwrap();
    assert!(pods(&kube).get("pod-a").await.is_ok());
    assert!(pooled.get("pod-a").await.is_ok());
}

#[tokio::test]
async fn hang_times_the_client_out_then_recovers() {
    let kube = fake().await;
    let impatient = client_with(&kube, |config| config.read_timeout = Some(Duration::from_millis(300)));
    let api: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::default_namespaced(impatient);
    kube.set_fault(Fault::Hang).await.unwrap();
    let error = api.get("pod-a").await.unwrap_err();
    assert!(format!("{error:?}").contains("TimedOut"), "{error:?}");
    assert_eq!(kube.requests(), 1, "the hung request was received");

    kube.set_fault(Fault::None).await.unwrap();
    assert!(api.get("pod-a").await.is_ok());
}

#[tokio::test]
async fn drop_mid_stream_sends_some_stdout_then_breaks_the_connection() {
    let kube = fake().await;
    kube.set_fault(Fault::DropMidStream).await.unwrap();
    let mut process = pods(&kube).exec("pod-a", ["/bin/sh", "-c", SLOW], &params()).await.unwrap();
    let mut first = [0u8; 6];
    process.stdout().unwrap().read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"first\n");
    // kube-rs ends its task with an error and drops the status sender. (Its stdout reader does
    // not reach EOF on this path, so the status future is what a caller must watch.)
    let status = timeout(Duration::from_secs(10), process.take_status().unwrap()).await.unwrap();
    assert!(status.is_none(), "no status after a dropped stream: {status:?}");
    let joined = timeout(Duration::from_secs(10), process.join()).await.unwrap();
    let error = joined.unwrap_err().to_string();
    assert!(error.starts_with("failed to receive a WebSocket message"), "{error}");
    timeout(Duration::from_secs(10), kube.wait_execs_finished()).await.unwrap();
}

#[tokio::test]
async fn close_mid_stream_ends_the_streams_without_a_status() {
    let kube = fake().await;
    kube.set_fault(Fault::CloseMidStream).await.unwrap();
    let mut process = pods(&kube).exec("pod-a", ["/bin/sh", "-c", SLOW], &params()).await.unwrap();
    let mut stdout = String::new();
    process.stdout().unwrap().read_to_string(&mut stdout).await.unwrap();
    assert_eq!(stdout, "first\n");
    assert!(process.take_status().unwrap().await.is_none());
    timeout(Duration::from_secs(10), kube.wait_execs_finished()).await.unwrap();
}

/// Prints once, then would run for ten minutes: the fault must cut it and the server kill it.
const SLOW: &str = "echo first; sleep 600; echo never";

fn params() -> AttachParams {
    AttachParams::default().container("main").stdout(true).stderr(true).stdin(false)
}

#[tokio::test]
async fn request_counter_counts_api_requests_only() {
    let kube = fake().await;
    assert_eq!(kube.requests(), 0);
    let api = pods(&kube);
    api.get("pod-a").await.unwrap();
    api.list(&ListParams::default()).await.unwrap();
    assert!(api.get("ghost").await.is_err());
    let params = AttachParams::default().container("main").stdout(true).stderr(false);
    let mut process = api.exec("pod-a", ["true"], &params).await.unwrap();
    assert_eq!(process.take_status().unwrap().await.unwrap().status.as_deref(), Some("Success"));
    assert_eq!(kube.requests(), 4);

    // Control requests are not Kubernetes traffic.
    let client = client_with(&kube, |_| {});
    let request = axum::http::Request::get("/_fake/requests").body(Vec::new()).unwrap();
    let body: serde_json::Value = client.request(request).await.unwrap();
    assert_eq!(body["requests"], 4);
    assert_eq!(kube.requests(), 4);
}
