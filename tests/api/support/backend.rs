//! Where the app under test runs: which database (`Db`), which executor (`Backend`), and the
//! macros that run one test body on each.

use std::path::Path;

use sqlx::Connection as _;

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

impl From<Db> for Backend {
    fn from(db: Db) -> Self {
        Backend::Local(db)
    }
}

impl Backend {
    /// The database the app stores its state in: Kubernetes runs on SQLite.
    pub fn db(self) -> Db {
        match self {
            Backend::Local(db) => db,
            Backend::Kubernetes => Db::Sqlite,
        }
    }
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
            use $crate::support::{Backend, Db};

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
                super::$name($crate::support::Db::Sqlite).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::support::Db::Postgres).await
            }
        }
    )*};
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
