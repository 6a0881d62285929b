//! `TestApp`: the real `App` on port 0 against a fresh database, with a temp projects folder,
//! started by one builder:
//!
//! ```ignore
//! let app = TestApp::on(Db::Sqlite).await;
//! let app = TestApp::on(Backend::Kubernetes).configure(|c| c.access.cache_ttl = ttl).clock(clock).await;
//! ```

use std::{
    future::{Future, IntoFuture},
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
};

use clap::Parser as _;
use rdev_api::{
    App, Config,
    adapters::Database,
    cli::Cli,
    domain::{ApiKey, ApiKeySecret, Scope},
    ports::{Clock, SystemClock},
};
use serde_json::{Value, json};
use tempfile::TempDir;

use super::backend::{Backend, HELLO_POD, NAMESPACE, fresh_database, project_pod};

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    /// An `admin` key, stored through the bootstrap path.
    pub admin_key: String,
    pub projects_dir: PathBuf,
    /// A second connection to the same database, to arrange what the API cannot (expired keys).
    pub database: Database,
    pub database_url: String,
    /// The fake cluster, for `Backend::Kubernetes`.
    pub kube: Option<fake_kube::FakeKube>,
    _dir: Arc<TempDir>,
}

/// One change to the settings, made before the app starts.
type Change<'a> = Box<dyn FnOnce(&mut Config) + 'a>;

/// How a `TestApp` starts: its backend, changes to the default settings, its clock. Awaiting
/// it starts the app.
pub struct AppBuilder<'a> {
    backend: Backend,
    changes: Vec<Change<'a>>,
    clock: Arc<dyn Clock>,
}

impl TestApp {
    /// The app on `backend` (a `Db` means the local executor on it), with the settings a
    /// flag-less start has, the system clock, and an admin key.
    pub fn on<'a>(backend: impl Into<Backend>) -> AppBuilder<'a> {
        AppBuilder { backend: backend.into(), changes: Vec::new(), clock: Arc::new(SystemClock) }
    }
}

impl<'a> AppBuilder<'a> {
    /// Changes settings before the app starts; applied in order, after the backend's.
    pub fn configure(mut self, change: impl FnOnce(&mut Config) + 'a) -> Self {
        self.changes.push(Box::new(change));
        self
    }

    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Kubernetes runs on SQLite against a fresh fake cluster that holds the `hello` project as
    /// a pod.
    async fn start(self) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let database_url = fresh_database(self.backend.db(), dir.path()).await;
        let admin = ApiKeySecret::generate();
        let projects_dir = dir.path().join("projects");
        let mut config = test_config(&database_url, &projects_dir);
        config.access.bootstrap_api_key = Some(admin.expose().to_owned().into());
        let kube = match self.backend {
            Backend::Local(_) => None,
            Backend::Kubernetes => {
                let kube = fake_kube::FakeKube::start().await.expect("fake cluster starts");
                kube.add_pod(project_pod(HELLO_POD, "hello")).expect("pod added");
                let kubeconfig = dir.path().join("kubeconfig");
                kube.write_kubeconfig(&kubeconfig, NAMESPACE).expect("kubeconfig written");
                config.executor.kind = rdev_api::config::ExecutorChoice::Kubernetes;
                config.executor.kubeconfig = Some(kubeconfig);
                config.executor.namespace = NAMESPACE.into();
                Some(kube)
            }
        };
        for change in self.changes {
            change(&mut config);
        }
        let addr = serve(config, self.clock).await;
        TestApp {
            addr,
            client: http_client(),
            admin_key: admin.expose().to_owned(),
            projects_dir,
            database: Database::connect(&database_url, 2).await.expect("second connection"),
            database_url,
            kube,
            _dir: Arc::new(dir),
        }
    }
}

impl<'a> IntoFuture for AppBuilder<'a> {
    type Output = TestApp;
    type IntoFuture = Pin<Box<dyn Future<Output = TestApp> + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.start())
    }
}

/// Builds the app and serves it in the background; returns where it listens.
async fn serve(config: Config, clock: Arc<dyn Clock>) -> SocketAddr {
    let app = App::build_with_clock(config, clock).await.expect("app builds");
    let addr = app.local_addr().expect("bound");
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    addr
}

/// An HTTP client for tests. reqwest's TLS needs a process-wide rustls provider (the service
/// installs ring when it starts; a test may build a client before that).
pub fn http_client() -> reqwest::Client {
    rdev_api::install_crypto_provider();
    reqwest::Client::new()
}

/// Settings for a server on a random loopback port, as a flag-less start would have them.
pub fn test_config(database_url: &str, projects_dir: &Path) -> Config {
    let cli = Cli::parse_from([
        "rdev-api",
        "--listen=127.0.0.1:0",
        &format!("--database-url={database_url}"),
        &format!("--projects-dir={}", projects_dir.display()),
        "--db-max-connections=4",
        // Every test client is 127.0.0.1; the cap per address has its own test.
        "--max-connections-per-ip=100000",
        // This test binary cannot start commands; the real one can.
        concat!("--sandbox-helper=", env!("CARGO_BIN_EXE_rdev-api")),
    ]);
    cli.config
}

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The `code` of an error body, checking the error shape on the way.
    pub fn error_code(&self) -> &str {
        let error = &self.body["error"];
        assert!(error["message"].is_string(), "error has a message: {}", self.body);
        assert!(error["request_id"].is_string(), "error has a request_id: {}", self.body);
        error["code"].as_str().unwrap_or_else(|| panic!("not an error body: {}", self.body))
    }

    pub fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or_default()
    }

    pub fn field_error(&self, field: &str) -> Option<&str> {
        self.body["error"]["details"]["fields"][field].as_str()
    }
}

impl TestApp {
    /// Another replica: a second server on the same database and projects folder, with the same
    /// admin key (local executor).
    pub async fn replica(&self, configure: impl FnOnce(&mut Config)) -> TestApp {
        let mut config = test_config(&self.database_url, &self.projects_dir);
        config.access.bootstrap_api_key = Some(self.admin_key.clone().into());
        configure(&mut config);
        let addr = serve(config, Arc::new(SystemClock)).await;
        TestApp {
            addr,
            client: http_client(),
            admin_key: self.admin_key.clone(),
            projects_dir: self.projects_dir.clone(),
            database: Database::connect(&self.database_url, 2).await.expect("second connection"),
            database_url: self.database_url.clone(),
            kube: None,
            _dir: self._dir.clone(),
        }
    }

    /// Polls `GET /commands/{id}` until `done` holds for it (30 s at most): queued work has no
    /// signal a client could await.
    pub async fn wait_for_command(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let reply = self.get(&format!("/commands/{id}"), &self.admin_key).await;
            assert_eq!(reply.status, 200, "{}", reply.body);
            if done(&reply.body) {
                return reply.body;
            }
            assert!(std::time::Instant::now() < deadline, "command never got there: {}", reply.body);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("JSON body, got {status}: {text:?}"))
        };
        Reply { status, headers, body }
    }

    pub async fn get(&self, path: &str, key: &str) -> Reply {
        self.send(self.client.get(self.url(path)).header("X-API-Key", key)).await
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> Reply {
        self.send(self.client.post(self.url(path)).header("X-API-Key", key).json(&body)).await
    }

    pub async fn patch(&self, path: &str, key: &str, body: Value) -> Reply {
        self.send(self.client.patch(self.url(path)).header("X-API-Key", key).json(&body)).await
    }

    pub async fn shell(&self, project: &str, body: Value) -> Reply {
        self.post(&format!("/projects/{project}/shell"), &self.admin_key, body).await
    }

    /// Creates a key through the API and returns (id, secret).
    pub async fn create_key(&self, scopes: &[&str]) -> (String, String) {
        let reply = self.post("/api-keys", &self.admin_key, json!({"name": "test", "scopes": scopes})).await;
        assert_eq!(reply.status, 201, "{}", reply.body);
        (reply.body["id"].as_str().unwrap().to_owned(), reply.body["key"].as_str().unwrap().to_owned())
    }

    /// Stores a key directly, bypassing the API's checks (e.g. one that expired already).
    pub async fn insert_key(&self, edit: impl FnOnce(&mut ApiKey)) -> String {
        let secret = ApiKeySecret::generate();
        let mut key = ApiKey {
            id: uuid::Uuid::new_v4(),
            name: "direct".into(),
            prefix: secret.display_prefix(),
            scopes: vec![Scope::Admin],
            allowed_ips: vec![],
            rate_limit_per_minute: None,
            quotas: Default::default(),
            expires_at: None,
            created_at: chrono::Utc::now(),
            last_used_at: None,
            revoked_at: None,
        };
        edit(&mut key);
        self.database.api_keys().insert(&key, &secret.hash()).await.expect("insert key");
        secret.expose().to_owned()
    }

    /// The id of the bootstrap admin key, as the API lists it.
    pub async fn admin_key_id(&self) -> String {
        let keys = self.get("/api-keys?limit=500", &self.admin_key).await;
        let admin = keys.body["api_keys"].as_array().unwrap().iter().find(|k| k["name"] == "bootstrap").unwrap();
        admin["id"].as_str().unwrap().to_owned()
    }

    /// Where a project's files are: its folder, or its pod's folder on the fake cluster.
    pub fn project_path(&self, project: &str) -> PathBuf {
        match &self.kube {
            None => self.projects_dir.join(project),
            Some(kube) => {
                assert_eq!(project, "hello", "only hello has a pod in these tests");
                kube.pod_dir(NAMESPACE, HELLO_POD).expect("the hello pod")
            }
        }
    }

    /// Resolves once the fake cluster has killed and reaped every command whose exec stream
    /// closed; at once for the local executor, which reaps before it answers.
    pub async fn commands_settled(&self) {
        if let Some(kube) = &self.kube {
            kube.wait_execs_finished().await;
        }
    }
}
