//! The Kubernetes executor's own behaviour: the circuit breaker, the project cache, pod choice,
//! and the real binary pointed at the fake cluster by a kubeconfig.

use chrono::Duration;
use fake_kube::Fault;
use rdev_api::domain::ApiKeySecret;
use serde_json::{Value, json};

use crate::support::{Backend, HELLO_POD, ManualClock, NAMESPACE, TestApp, process::ServerProcess, project_pod};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_after_n_failures_answers_503_without_calling_then_closes() {
    let clock = ManualClock::new();
    let app = TestApp::on(Backend::Kubernetes)
        .configure(|config| {
            config.executor.breaker_failures = 3;
            config.executor.breaker_cooldown = std::time::Duration::from_secs(30);
        })
        .clock(clock.clone())
        .await;
    let kube = app.kube.as_ref().unwrap();
    kube.set_fault(Fault::Http500).await.unwrap();
    for _ in 0..3 {
        let reply = app.get("/projects", &app.admin_key).await;
        assert_eq!((reply.status, reply.error_code()), (503, "EXECUTOR_UNAVAILABLE"), "{}", reply.body);
        assert!(reply.headers.contains_key("retry-after"), "every 503 says when to come back, open circuit or not");
    }
    let calls = kube.requests();
    let refused = app.shell("hello", json!({"command": "echo hi"})).await;
    assert_eq!((refused.status, refused.error_code()), (503, "EXECUTOR_UNAVAILABLE"));
    let retry_after: u64 = refused.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    assert_eq!(app.get("/projects", &app.admin_key).await.status, 503);
    assert_eq!(kube.requests(), calls, "an open circuit does not touch the API server");
    let ready = app.send(app.client.get(app.url("/ready"))).await;
    assert_eq!((ready.status, ready.body["checks"]["executor"].as_str()), (200, Some("circuit open")));
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"circuit_breaker_state{executor="kubernetes"} 2"#), "{metrics}");

    kube.set_fault(Fault::None).await.unwrap();
    clock.advance(Duration::seconds(31));
    let probe = app.shell("hello", json!({"command": "echo back"})).await;
    assert_eq!((probe.status, probe.body["stdout"].as_str()), (200, Some("back\n")), "the probe succeeds");
    assert_eq!(app.send(app.client.get(app.url("/ready"))).await.body["checks"]["executor"], "ok");
    assert_eq!(app.get("/projects", &app.admin_key).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_failures_do_not_count_against_the_cluster() {
    let app = TestApp::on(Backend::Kubernetes).configure(|config| config.executor.breaker_failures = 2).await;
    for _ in 0..4 {
        assert_eq!(app.shell("hello", json!({"command": "exit 7"})).await.body["exit_code"], 7);
    }
    assert_eq!(
        app.shell("hello", json!({"command": "true"})).await.status,
        200,
        "non-zero exits are results, not outages"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_exec_stream_is_an_executor_failure_not_a_hang() {
    let app = TestApp::on(Backend::Kubernetes).await;
    app.kube.as_ref().unwrap().set_fault(Fault::DropMidStream).await.unwrap();
    let reply = app.shell("hello", json!({"command": "echo partial; sleep 30", "timeout_secs": 60})).await;
    assert_eq!((reply.status, reply.error_code()), (503, "EXECUTOR_UNAVAILABLE"), "{}", reply.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_are_cached_for_cache_ttl_and_a_hit_makes_no_api_call() {
    let clock = ManualClock::new();
    let app = TestApp::on(Backend::Kubernetes)
        .configure(|config| config.access.cache_ttl = std::time::Duration::from_secs(5))
        .clock(clock.clone())
        .await;
    let kube = app.kube.as_ref().unwrap();
    let ids = |reply: crate::support::Reply| -> Vec<String> {
        reply.body["projects"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(ids(app.get("/projects", &app.admin_key).await), ["hello"]);
    let calls = kube.requests();
    kube.add_pod(project_pod("zeta-0", "zeta")).unwrap();
    clock.advance(Duration::seconds(4));
    assert_eq!(ids(app.get("/projects", &app.admin_key).await), ["hello"], "not before CACHE_TTL");
    assert_eq!(kube.requests(), calls, "a cache hit makes no API call");
    clock.advance(Duration::seconds(2));
    assert_eq!(ids(app.get("/projects", &app.admin_key).await), ["hello", "zeta"], "after CACHE_TTL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_map_to_projects_preferring_a_running_ready_pod() {
    let app = TestApp::on(Backend::Kubernetes).await;
    let kube = app.kube.as_ref().unwrap();
    kube.add_pod(project_pod("hello-old", "hello").phase("Running").ready(false)).unwrap();
    kube.add_pod(project_pod("web-0", "web").phase("Pending").ready(false)).unwrap();
    kube.add_pod(project_pod("done-0", "done").phase("Succeeded").ready(false)).unwrap();
    kube.add_pod(fake_kube::PodSpec::new(NAMESPACE, "unlabelled").container("main")).unwrap();
    kube.add_pod(project_pod("elsewhere", "other-ns").label("rdev.orchard9.ai/project", "false")).unwrap();
    let reply = app.get("/projects", &app.admin_key).await;
    let projects = reply.body["projects"].as_array().unwrap();
    let summary: Vec<(&str, &str, &str)> = projects
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["status"].as_str().unwrap(), p["pod"].as_str().unwrap()))
        .collect();
    assert_eq!(summary, [("done", "stopped", "done-0"), ("hello", "running", HELLO_POD), ("web", "pending", "web-0")]);
    assert_eq!(projects[1]["namespace"], NAMESPACE);
    assert_eq!(projects[1]["executor"], "kubernetes");
    assert!(projects[1].get("container").is_none(), "not part of the API");
    // Commands run in the annotated container, not the first one.
    let reply = app.shell("hello", json!({"command": "echo in-pod"})).await;
    assert_eq!(reply.body["stdout"], "in-pod\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_with_a_kubeconfig_lists_pods_and_runs_echo_hello() {
    let kube = fake_kube::FakeKube::start().await.unwrap();
    kube.add_pod(project_pod(HELLO_POD, "hello")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    kube.write_kubeconfig(&kubeconfig, NAMESPACE).unwrap();
    let key = ApiKeySecret::generate().expose().to_owned();
    let envs = [
        ("RDEV_EXECUTOR", "kubernetes"),
        ("KUBECONFIG", kubeconfig.to_str().unwrap()),
        ("RDEV_NAMESPACE", NAMESPACE),
        ("RDEV_BOOTSTRAP_API_KEY", key.as_str()),
    ];
    let mut server = ServerProcess::start(dir.path(), &envs).await;
    let projects: Value = server.get_json("/projects", &key).await;
    assert_eq!(projects["projects"][0]["pod"], HELLO_POD);
    let run: Value = server.post_json("/projects/hello/shell", &key, &json!({"command": "echo hello"})).await;
    assert_eq!((run["exit_code"].as_i64(), run["stdout"].as_str()), (Some(0), Some("hello\n")));
    assert!(!dir.path().join("projects").exists(), "no local projects folder with the Kubernetes executor");
    assert!(server.terminate().await.success());
}
