//! `spawn_app`: the real `App` on port 0 against a fresh database, with a temp projects folder.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use chrono::{DateTime, Utc};

use clap::Parser as _;
use rdev_api::{
    App, Config,
    adapters::Database,
    cli::Cli,
    domain::{ApiKey, ApiKeySecret, Scope},
    ports::Clock,
};
use serde_json::{Value, json};
use sqlx::Connection as _;
use tempfile::TempDir;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Where commands run: local processes, or pods of the fake Kubernetes API server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Local(Db),
    Kubernetes,
}

/// The namespace and pod that stand for the `hello` project on the fake cluster.
pub const NAMESPACE: &str = "rdev";
pub const HELLO_POD: &str = "hello-7d4b9";

/// A project pod as the product labels it.
pub fn project_pod(name: &str, project_id: &str) -> fake_kube::PodSpec {
    fake_kube::PodSpec::new(NAMESPACE, name)
        .label("rdev.orchard9.ai/project", "true")
        .label("rdev.orchard9.ai/project-id", project_id)
        .annotation("rdev.orchard9.ai/container", "main")
        .container("sidecar")
        .container("main")
}

/// Generates, for each named `async fn name(backend: Backend)`, a test per backend: `name::sqlite`
/// and `name::postgres` with the local executor, `name::kubernetes` on the fake cluster.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use $crate::helpers::{Backend, Db};

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(Backend::Local(Db::Sqlite)).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(Backend::Local(Db::Postgres)).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn kubernetes() {
                super::$name(Backend::Kubernetes).await
            }
        }
    )*};
}

/// Generates, for each named `async fn name(db: Db)`, a test per database: `name::sqlite` and
/// `name::postgres`, so every behaviour is checked on both with one body.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::helpers::Db::Sqlite).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::helpers::Db::Postgres).await
            }
        }
    )*};
}

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

/// An HTTP client for tests. reqwest's TLS needs a process-wide rustls provider (the service
/// installs ring when it starts; a test may build a client before that).
pub fn http_client() -> reqwest::Client {
    rdev_api::install_crypto_provider();
    reqwest::Client::new()
}

pub async fn spawn_app(db: Db) -> TestApp {
    spawn_app_with(db, |_| {}).await
}

/// A clock tests move by hand, so expiry and grace periods need no waiting.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new() -> Arc<Self> {
        Arc::new(Self(Mutex::new(Utc::now())))
    }

    pub fn advance(&self, by: chrono::Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

pub async fn spawn_app_with(db: Db, configure: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_with_clock(db, configure, Arc::new(rdev_api::ports::SystemClock)).await
}

pub async fn spawn_app_with_clock(db: Db, configure: impl FnOnce(&mut Config), clock: Arc<dyn Clock>) -> TestApp {
    spawn(Backend::Local(db), configure, clock).await
}

pub async fn spawn_backend(backend: Backend) -> TestApp {
    spawn(backend, |_| {}, Arc::new(rdev_api::ports::SystemClock)).await
}

pub async fn spawn_backend_with(backend: Backend, configure: impl FnOnce(&mut Config)) -> TestApp {
    spawn(backend, configure, Arc::new(rdev_api::ports::SystemClock)).await
}

/// The real app on `backend`: Kubernetes runs on SQLite against a fresh fake cluster that holds
/// the `hello` project as a pod.
pub async fn spawn(backend: Backend, configure: impl FnOnce(&mut Config), clock: Arc<dyn Clock>) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = match backend {
        Backend::Local(db) => db,
        Backend::Kubernetes => Db::Sqlite,
    };
    let database_url = fresh_database(db, dir.path()).await;
    let admin = ApiKeySecret::generate();
    let projects_dir = dir.path().join("projects");
    let mut config = test_config(&database_url, &projects_dir);
    config.access.bootstrap_api_key = Some(admin.expose().to_owned().into());
    let kube = match backend {
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
    configure(&mut config);
    let app = App::build_with_clock(config, clock).await.expect("app builds");
    let addr = app.local_addr().expect("bound");
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    let database = Database::connect(&database_url, 2).await.expect("second connection");
    TestApp {
        addr,
        client: crate::helpers::http_client(),
        admin_key: admin.expose().to_owned(),
        projects_dir,
        database,
        database_url,
        kube,
        _dir: Arc::new(dir),
    }
}

/// Settings for a server on a random loopback port, as a flag-less start would have them.
pub fn test_config(database_url: &str, projects_dir: &Path) -> Config {
    let cli = Cli::parse_from([
        "rdev-api",
        "--listen=127.0.0.1:0",
        &format!("--database-url={database_url}"),
        &format!("--projects-dir={}", projects_dir.display()),
        "--db-max-connections=4",
        // This test binary cannot start commands; the real one can.
        concat!("--sandbox-helper=", env!("CARGO_BIN_EXE_rdev-api")),
    ]);
    cli.config
}

/// A URL of a database no other test uses: a SQLite file in `dir`, or a new Postgres database.
pub async fn fresh_database(db: Db, dir: &Path) -> String {
    match db {
        Db::Sqlite => format!("sqlite://{}", dir.join("rdev.db").display()),
        Db::Postgres => fresh_postgres_database().await,
    }
}

/// A new, empty Postgres database for one test, so tests run in parallel without sharing rows.
/// `scripts/test` drops them all before the next run.
async fn fresh_postgres_database() -> String {
    let admin_url = std::env::var("RDEV_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("rdev_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn =
        sqlx::PgConnection::connect(&admin_url).await.expect("Postgres is reachable (scripts/test starts it)");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let (base, _) = admin_url.rsplit_once('/').expect("URL with a database name");
    format!("{base}/{name}")
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
        let app = App::build(config).await.expect("replica builds");
        let addr = app.local_addr().expect("bound");
        tokio::spawn(app.run_until_stopped(std::future::pending()));
        TestApp {
            addr,
            client: crate::helpers::http_client(),
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

/// Processes whose command line contains `marker` and that are still running (zombies, which
/// only wait for their parent to reap them, do not count).
pub fn live_processes_with(marker: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return vec![] };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let proc = Path::new("/proc").join(pid.to_string());
            let cmdline = std::fs::read(proc.join("cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(proc.join("stat")).unwrap_or_default();
            let zombie = stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z'));
            String::from_utf8_lossy(&cmdline).contains(marker) && !zombie
        })
        .collect()
}
