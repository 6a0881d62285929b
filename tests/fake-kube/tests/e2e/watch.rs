//! Watch, checked with kube-rs's own watcher and reflector: the initial list, changes as they
//! happen (a relabel out of the selector is a delete), bookmarks, `410 Gone` after the history
//! expired, and an API server that goes away and comes back.

use std::time::{Duration, Instant};

use fake_kube::Fault;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt, reflector, watcher};

use crate::support::{NS, PROJECT, fake, pods, project_pod};

/// Waits (5 s at most) until the store's pod names are `names`.
async fn until_names(store: &reflector::Store<Pod>, names: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut seen: Vec<String> = store.state().iter().filter_map(|p| p.metadata.name.clone()).collect();
        seen.sort();
        if seen == names {
            return;
        }
        assert!(Instant::now() < deadline, "store holds {seen:?}, expected {names:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_reflector_follows_the_pods_through_expiry_and_restart() {
    let kube = fake().await;
    kube.add_pod(project_pod("pod-b", "other")).unwrap();
    kube.add_pod(fake_kube::PodSpec::new(NS, "unlabelled")).unwrap();
    let (store, writer) = reflector::store();
    let config = watcher::Config::default().labels(&format!("{PROJECT}=true"));
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = events.clone();
    let stream = watcher(pods(&kube), config).default_backoff().reflect(writer).for_each(move |event| {
        let seen = seen.clone();
        async move {
            let label = match event {
                Ok(watcher::Event::Apply(_)) => "apply",
                Ok(watcher::Event::Delete(_)) => "delete",
                Ok(watcher::Event::Init) => "init",
                Ok(watcher::Event::InitApply(_)) => "init-apply",
                Ok(watcher::Event::InitDone) => "init-done",
                Err(_) => "error",
            };
            seen.lock().unwrap().push(label.to_owned());
        }
    });
    let task = tokio::spawn(stream);
    tokio::time::timeout(Duration::from_secs(5), store.wait_until_ready()).await.unwrap().unwrap();
    until_names(&store, &["pod-a", "pod-b"]).await;

    kube.add_pod(project_pod("pod-c", "third")).unwrap();
    until_names(&store, &["pod-a", "pod-b", "pod-c"]).await;
    kube.add_pod(fake_kube::PodSpec::new(NS, "pod-b").label(PROJECT, "false")).unwrap();
    until_names(&store, &["pod-a", "pod-c"]).await;
    assert!(kube.remove_pod(NS, "pod-a"));
    until_names(&store, &["pod-c"]).await;

    // The API server goes away: the store keeps what it knew, and catches up once it is back.
    kube.set_fault(Fault::Refuse).await.unwrap();
    kube.add_pod(project_pod("pod-d", "fourth")).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    until_names(&store, &["pod-c"]).await;
    kube.set_fault(Fault::None).await.unwrap();
    tokio::time::timeout(Duration::from_secs(15), until_names(&store, &["pod-c", "pod-d"])).await.unwrap();

    // Away again, and meanwhile the history it would resume from is gone: 410, and a new list.
    let inits = || events.lock().unwrap().iter().filter(|e| *e == "init").count();
    let before = inits();
    kube.set_fault(Fault::Refuse).await.unwrap();
    assert!(kube.remove_pod(NS, "pod-c"));
    kube.expire_watches();
    kube.set_fault(Fault::None).await.unwrap();
    tokio::time::timeout(Duration::from_secs(15), until_names(&store, &["pod-d"])).await.unwrap();
    assert!(inits() > before, "listed again after 410: {:?}", events.lock().unwrap());
    task.abort();
}

/// The raw stream: `ADDED` for what exists without a version, bookmarks when allowed, and an
/// `ERROR` event with `410` for a version older than the history.
#[tokio::test]
async fn the_watch_stream_speaks_the_api_servers_events() {
    let kube = fake().await;
    let client = reqwest_like(&kube);
    let first =
        client.get(&format!("/api/v1/namespaces/{NS}/pods?watch=1&allowWatchBookmarks=true&timeoutSeconds=2")).await;
    let kinds: Vec<String> = first.iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect();
    assert_eq!(kinds.first().map(String::as_str), Some("ADDED"));
    assert!(kinds.iter().any(|k| k == "BOOKMARK"), "{kinds:?}");
    kube.add_pod(project_pod("pod-b", "other")).unwrap();
    kube.expire_watches();
    let gone = client.get(&format!("/api/v1/namespaces/{NS}/pods?watch=1&resourceVersion=1&timeoutSeconds=5")).await;
    assert_eq!((gone[0]["type"].as_str(), gone[0]["object"]["code"].as_u64()), (Some("ERROR"), Some(410)));
}

/// A plain HTTP/1.0 GET of a watch (the answer then ends with the connection), read to its end
/// as one JSON event per line.
struct Lines(std::net::SocketAddr);

fn reqwest_like(kube: &fake_kube::FakeKube) -> Lines {
    Lines(kube.addr())
}

impl Lines {
    async fn get(&self, path: &str) -> Vec<serde_json::Value> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.0).await.unwrap();
        stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: fake\r\n\r\n").as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8(answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"), "{head}");
        body.lines().filter(|l| !l.is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}
