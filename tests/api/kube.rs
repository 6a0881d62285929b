//! The Kubernetes executor's own behaviour: the circuit breaker, the watch behind the projects,
//! pod choice, and the real binary pointed at the fake cluster by a kubeconfig.

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
    assert_eq!(app.get("/projects", &app.admin_key).await.status, 200, "the first list is in");
    kube.set_fault(Fault::Http500).await.unwrap();
    for _ in 0..3 {
        let reply = app.shell("hello", json!({"command": "echo hi"})).await;
        assert_eq!((reply.status, reply.error_code()), (503, "EXECUTOR_UNAVAILABLE"), "{}", reply.body);
        assert!(reply.headers.contains_key("retry-after"), "every 503 says when to come back, open circuit or not");
    }
    let calls = kube.requests();
    let refused = app.shell("hello", json!({"command": "echo hi"})).await;
    assert_eq!((refused.status, refused.error_code()), (503, "EXECUTOR_UNAVAILABLE"));
    let retry_after: u64 = refused.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    assert_eq!(kube.requests(), calls, "an open circuit does not touch the API server");
    assert_eq!(app.get("/projects", &app.admin_key).await.status, 200, "projects come from the watch, not the API");
    let ready = app.send(app.client.get(app.url("/ready"))).await;
    assert_eq!((ready.status, ready.body["checks"]["executor"].as_str()), (200, Some("circuit open")));
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"circuit_breaker_state{executor="kubernetes"} 2"#), "{metrics}");

    kube.set_fault(Fault::None).await.unwrap();
    clock.advance(Duration::seconds(31));
    let probe = app.shell("hello", json!({"command": "echo back"})).await;
    assert_eq!((probe.status, probe.body["stdout"].as_str()), (200, Some("back\n")), "the probe succeeds");
    assert_eq!(app.send(app.client.get(app.url("/ready"))).await.body["checks"]["executor"], "ok");
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

/// The project ids `/projects` lists.
async fn listed(app: &TestApp) -> Vec<String> {
    let reply = app.get("/projects", &app.admin_key).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body["projects"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_owned()).collect()
}

/// Polls `/projects` until it lists `ids`, and returns how long that took (1 s at most).
async fn until_listed(app: &TestApp, ids: &[&str]) -> std::time::Duration {
    let started = std::time::Instant::now();
    loop {
        if listed(app).await == ids {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "not {ids:?} within 1 s: {:?}",
            listed(app).await
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_seen_within_a_second_and_lookups_make_no_api_call() {
    let app = TestApp::on(Backend::Kubernetes).configure(|config| config.access.rate_limit_per_minute = 100_000).await;
    let kube = app.kube.as_ref().unwrap();
    assert_eq!(listed(&app).await, ["hello"]);
    kube.add_pod(project_pod("zeta-0", "zeta")).unwrap();
    let created = until_listed(&app, &["hello", "zeta"]).await;
    assert_eq!(app.get("/projects/zeta", &app.admin_key).await.body["pod"], "zeta-0");
    kube.add_pod(project_pod("zeta-0", "zeta").label("rdev.orchard9.ai/project", "false")).unwrap();
    let relabelled = until_listed(&app, &["hello"]).await;
    kube.add_pod(project_pod("zeta-0", "zeta")).unwrap();
    until_listed(&app, &["hello", "zeta"]).await;
    assert!(kube.remove_pod(NAMESPACE, "zeta-0"));
    let deleted = until_listed(&app, &["hello"]).await;
    assert_eq!(app.get("/projects/zeta", &app.admin_key).await.message(), "project not found");
    eprintln!("created {created:?}, relabelled {relabelled:?}, deleted {deleted:?}");

    let calls = kube.requests();
    for i in 0..1000 {
        let path = if i % 2 == 0 { "/projects/hello" } else { "/projects" };
        assert_eq!(app.get(path, &app.admin_key).await.status, 200);
    }
    assert_eq!(kube.requests(), calls, "1,000 lookups, no API call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_recovers_from_expiry_and_a_restart_serving_the_last_pods_meanwhile() {
    let app = TestApp::on(Backend::Kubernetes).await;
    let kube = app.kube.as_ref().unwrap();
    assert_eq!(listed(&app).await, ["hello"]);
    // The API server goes away: the last known pods are still served, and /ready says so.
    kube.set_fault(Fault::Refuse).await.unwrap();
    kube.add_pod(project_pod("away-0", "away")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let ready = app.send(app.client.get(app.url("/ready"))).await;
        if ready.body["checks"]["projects"].as_str().is_some_and(|c| c.starts_with("stale")) {
            assert_eq!(ready.status, 200, "stale is still ready: {}", ready.body);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never stale: {}", ready.body);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(listed(&app).await, ["hello"], "the last known pods");
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("kube_watch_state 2"), "{metrics}");
    // Meanwhile its history expired too: the watch's resume gets 410, and it lists again.
    kube.expire_watches();
    kube.set_fault(Fault::None).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while listed(&app).await != ["away", "hello"] {
        assert!(std::time::Instant::now() < deadline, "not recovered: {:?}", listed(&app).await);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let ready = app.send(app.client.get(app.url("/ready"))).await;
    assert_eq!(ready.body["checks"]["projects"], "ok", "{}", ready.body);
    kube.add_pod(project_pod("after-0", "after")).unwrap();
    until_listed(&app, &["after", "away", "hello"]).await;
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
    until_listed(&app, &["done", "hello", "web"]).await;
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
