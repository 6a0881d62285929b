//! The two SQL dialects behind one interface, so each repository is written once, generic over
//! `D: Dialect`, with the SQL text and the locking chosen per dialect only where they differ.
//!
//! Both databases take `$1`-style parameters (sqlx maps SQLite's `$N` to the N-th argument), so
//! most statements are the same text. What differs is how a value is stored (`values`), how a
//! write transaction starts (`BEGIN` on Postgres; `BEGIN IMMEDIATE` on SQLite, which takes its
//! single write lock at once), and the statements that use what only one of them has
//! (`FOR UPDATE SKIP LOCKED`, arrays, advisory locks, `LISTEN`): those are chosen with
//! `D::KIND`, side by side in the repository that needs them.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::Serialize;
use sqlx::{Pool, Postgres, Sqlite, Transaction, query::Query};
use tokio::sync::Notify;
use uuid::Uuid;

use super::{
    health::Health,
    values::{Plain, Row},
};
use crate::domain::{DomainError, PageRequest};

/// Which of the two a dialect is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Postgres,
    Sqlite,
}

type Q<D> = Query<'static, D, <D as sqlx::Database>::Arguments>;

/// A pool and what is known of its database's health: what every repository holds.
pub(crate) struct Db<D: sqlx::Database> {
    pub(crate) pool: Pool<D>,
    pub(crate) health: Arc<Health>,
}

impl<D: sqlx::Database> Clone for Db<D> {
    fn clone(&self) -> Self {
        Self { pool: self.pool.clone(), health: self.health.clone() }
    }
}

/// A write transaction (see `begin`), with the health its failures report to.
pub(crate) struct Tx<D: sqlx::Database> {
    tx: Transaction<'static, D>,
    health: Arc<Health>,
}

/// Where a statement runs: on the pool (a connection of its own, which it may wait for), or on
/// a transaction's connection.
pub(crate) enum On<'a, D: sqlx::Database> {
    Pool(&'a Pool<D>, &'a Health),
    Conn(&'a mut D::Connection, &'a Health),
}

impl<'a, D: sqlx::Database> On<'a, D> {
    fn health(&self) -> &'a Health {
        match self {
            On::Pool(_, health) | On::Conn(_, health) => health,
        }
    }

    /// The same place again, for one more statement.
    pub(crate) fn reborrow(&mut self) -> On<'_, D> {
        match self {
            On::Pool(pool, health) => On::Pool(pool, health),
            On::Conn(conn, health) => On::Conn(&mut **conn, health),
        }
    }
}

impl<'a, D: sqlx::Database> From<&'a Db<D>> for On<'a, D> {
    fn from(db: &'a Db<D>) -> Self {
        Self::Pool(&db.pool, &db.health)
    }
}

impl<'a, D: sqlx::Database> From<&'a mut Tx<D>> for On<'a, D> {
    fn from(tx: &'a mut Tx<D>) -> Self {
        Self::Conn(&mut *tx.tx, &tx.health)
    }
}

/// A database the repositories run on.
pub(crate) trait Dialect: sqlx::Database<Row: Row> + Sync {
    const KIND: Kind;
    /// The `db.system` of spans (OpenTelemetry's names).
    const SYSTEM: &'static str;

    fn bind<T: Plain + 'static>(query: Q<Self>, value: T) -> Q<Self>;
    fn bind_uuid(query: Q<Self>, value: Option<Uuid>) -> Q<Self>;
    fn bind_time(query: Q<Self>, value: Option<DateTime<Utc>>) -> Q<Self>;
    fn bind_strings(query: Q<Self>, value: Vec<String>) -> Q<Self>;
    fn bind_json(query: Q<Self>, value: serde_json::Value) -> Q<Self>;

    /// Runs a statement; the number of rows it changed.
    fn execute(on: On<'_, Self>, query: Q<Self>) -> BoxFuture<'_, Result<u64, sqlx::Error>>;
    fn fetch_optional(on: On<'_, Self>, query: Q<Self>) -> BoxFuture<'_, Result<Option<Self::Row>, sqlx::Error>>;
    fn fetch_all(on: On<'_, Self>, query: Q<Self>) -> BoxFuture<'_, Result<Vec<Self::Row>, sqlx::Error>>;
    /// A transaction that writes: on SQLite it holds the write lock from its first statement.
    fn begin(pool: &Pool<Self>) -> BoxFuture<'_, Result<Transaction<'static, Self>, sqlx::Error>>;

    /// Wakes `work` on every notification on `channel`, for as long as the process runs:
    /// Postgres `LISTEN`, over a connection of its own that comes back after a failure. Other
    /// databases have one process, which wakes itself. One waiter is woken (`notify_one`, with a
    /// permit kept when none waits): one enqueue is one command, and waking them all sent every
    /// idle worker of every replica to claim it.
    fn listen(pool: &Pool<Self>, channel: &'static str, work: Arc<Notify>) {
        // A notification possibly missed wakes one too: a waiter that finds nothing waits again.
        Self::listen_payloads(pool, channel, Arc::new(move |_: Option<&str>| work.notify_one()));
    }

    /// Calls `heard` with the payload of every notification on `channel` (Postgres `LISTEN`, as
    /// `listen`), and with `None` whenever notifications may have been missed (the connection
    /// came back). Other databases have one process, which tells itself.
    fn listen_payloads(pool: &Pool<Self>, channel: &'static str, heard: Heard);
}

/// What a listener of payloads calls: `Some(payload)`, or `None` when some may have been lost.
pub(crate) type Heard = Arc<dyn Fn(Option<&str>) + Send + Sync>;

/// The running of statements, the same for both: sqlx's own methods, on a pool or a connection.
macro_rules! runs {
    () => {
        fn execute(on: On<'_, Self>, query: Q<Self>) -> BoxFuture<'_, Result<u64, sqlx::Error>> {
            Box::pin(async move {
                let done = match on {
                    On::Pool(pool, _) => query.execute(pool).await?,
                    On::Conn(conn, _) => query.execute(conn).await?,
                };
                Ok(done.rows_affected())
            })
        }

        fn fetch_optional(on: On<'_, Self>, query: Q<Self>) -> BoxFuture<'_, Result<Option<Self::Row>, sqlx::Error>> {
            Box::pin(async move {
                match on {
                    On::Pool(pool, _) => query.fetch_optional(pool).await,
                    On::Conn(conn, _) => query.fetch_optional(conn).await,
                }
            })
        }

        fn fetch_all(on: On<'_, Self>, query: Q<Self>) -> BoxFuture<'_, Result<Vec<Self::Row>, sqlx::Error>> {
            Box::pin(async move {
                match on {
                    On::Pool(pool, _) => query.fetch_all(pool).await,
                    On::Conn(conn, _) => query.fetch_all(conn).await,
                }
            })
        }
    };
}

impl Dialect for Postgres {
    const KIND: Kind = Kind::Postgres;
    const SYSTEM: &'static str = "postgresql";

    fn bind<T: Plain + 'static>(query: Q<Self>, value: T) -> Q<Self> {
        query.bind(value)
    }

    fn bind_uuid(query: Q<Self>, value: Option<Uuid>) -> Q<Self> {
        query.bind(value)
    }

    fn bind_time(query: Q<Self>, value: Option<DateTime<Utc>>) -> Q<Self> {
        query.bind(value)
    }

    fn bind_strings(query: Q<Self>, value: Vec<String>) -> Q<Self> {
        query.bind(value)
    }

    fn bind_json(query: Q<Self>, value: serde_json::Value) -> Q<Self> {
        query.bind(value)
    }

    runs!();

    fn begin(pool: &Pool<Self>) -> BoxFuture<'_, Result<Transaction<'static, Self>, sqlx::Error>> {
        Box::pin(pool.begin())
    }

    fn listen_payloads(pool: &Pool<Self>, channel: &'static str, heard: Heard) {
        let pool = pool.clone();
        tokio::spawn(async move {
            loop {
                match sqlx::postgres::PgListener::connect_with(&pool).await {
                    Ok(mut listener) => {
                        if listener.listen(channel).await.is_ok() {
                            // Whatever came while it was away is unknown.
                            heard(None);
                            while let Ok(notification) = listener.recv().await {
                                heard(Some(notification.payload()));
                            }
                        }
                    }
                    Err(error) => tracing::warn!(%error, channel, "cannot LISTEN; polling only"),
                }
                // Reconnect; waiters poll meanwhile, so nothing waits on this.
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
    }
}

impl Dialect for Sqlite {
    const KIND: Kind = Kind::Sqlite;
    const SYSTEM: &'static str = "sqlite";

    fn bind<T: Plain + 'static>(query: Q<Self>, value: T) -> Q<Self> {
        query.bind(value)
    }

    fn bind_uuid(query: Q<Self>, value: Option<Uuid>) -> Q<Self> {
        query.bind(value.map(|id| id.to_string()))
    }

    fn bind_time(query: Q<Self>, value: Option<DateTime<Utc>>) -> Q<Self> {
        query.bind(value.map(|at| at.timestamp_micros()))
    }

    fn bind_strings(query: Q<Self>, value: Vec<String>) -> Q<Self> {
        query.bind(serde_json::Value::from(value).to_string())
    }

    fn bind_json(query: Q<Self>, value: serde_json::Value) -> Q<Self> {
        query.bind(value.to_string())
    }

    runs!();

    fn begin(pool: &Pool<Self>) -> BoxFuture<'_, Result<Transaction<'static, Self>, sqlx::Error>> {
        Box::pin(pool.begin_with("BEGIN IMMEDIATE"))
    }

    fn listen_payloads(_: &Pool<Self>, _: &'static str, _: Heard) {}
}

/// The `VALUES` list of a multi-row insert, the only parameters of its statement: `rows` tuples
/// of `columns`, for one statement (one round trip) instead of one per row. Postgres numbers
/// them (`($1, $2), ($3, $4)`); SQLite gets anonymous `?`, bound in order, because sqlx looks
/// up the name of every numbered one, which SQLite finds by a linear search: quadratic in the
/// parameters, and the largest cost of a batch of commands.
pub(crate) fn values_rows<D: Dialect>(rows: usize, columns: usize) -> String {
    let param = |n: usize| match D::KIND {
        Kind::Postgres => format!("${n}"),
        Kind::Sqlite => "?".to_owned(),
    };
    (0..rows)
        .map(|row| {
            let params: Vec<String> = (1..=columns).map(|column| param(row * columns + column)).collect();
            format!("({})", params.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A statement being bound, then run; errors come back as `DomainError`s.
pub(crate) struct Stmt<D: Dialect>(Q<D>);

impl<D: Dialect> Stmt<D> {
    pub(crate) fn new(sql: impl Into<String>) -> Self {
        Self(sqlx::query(sqlx::AssertSqlSafe(sql.into())))
    }

    pub(crate) fn value<T: Plain + 'static>(self, value: T) -> Self {
        Self(D::bind(self.0, value))
    }

    pub(crate) fn uuid(self, value: Option<Uuid>) -> Self {
        Self(D::bind_uuid(self.0, value))
    }

    pub(crate) fn time(self, value: Option<DateTime<Utc>>) -> Self {
        Self(D::bind_time(self.0, value))
    }

    /// A list of strings (`text[]`, or a JSON array).
    pub(crate) fn strings(self, value: Vec<String>) -> Self {
        Self(D::bind_strings(self.0, value))
    }

    /// A document (`jsonb`, or JSON text).
    pub(crate) fn json(self, value: &impl Serialize) -> Self {
        Self(D::bind_json(self.0, serde_json::to_value(value).unwrap_or_default()))
    }

    /// A page of a listing: its cursor (the last id seen), then one row more than asked for.
    pub(crate) fn page(self, page: &PageRequest) -> Self {
        self.uuid(page.after).value(page.fetch_limit())
    }

    pub(crate) async fn execute<'a>(self, on: impl Into<On<'a, D>>) -> Result<u64, DomainError> {
        let on = on.into();
        run(on.health(), matches!(on, On::Pool(..)), D::execute(on, self.0)).await
    }

    pub(crate) async fn fetch_optional<'a>(self, on: impl Into<On<'a, D>>) -> Result<Option<D::Row>, DomainError> {
        let on = on.into();
        run(on.health(), matches!(on, On::Pool(..)), D::fetch_optional(on, self.0)).await
    }

    pub(crate) async fn fetch_all<'a>(self, on: impl Into<On<'a, D>>) -> Result<Vec<D::Row>, DomainError> {
        let on = on.into();
        run(on.health(), matches!(on, On::Pool(..)), D::fetch_all(on, self.0)).await
    }

    pub(crate) async fn fetch_one<'a>(self, on: impl Into<On<'a, D>>) -> Result<D::Row, DomainError> {
        self.fetch_optional(on).await?.ok_or_else(|| DomainError::internal(anyhow::anyhow!("a query returned no row")))
    }

    /// Each row mapped by `read`.
    pub(crate) async fn fetch_mapped<'a, T>(
        self,
        on: impl Into<On<'a, D>>,
        read: impl Fn(&D::Row) -> Result<T, DomainError>,
    ) -> Result<Vec<T>, DomainError> {
        self.fetch_all(on).await?.iter().map(read).collect()
    }
}

/// Runs a statement: one that needs a connection from the pool is refused while the database
/// is down (see `health`); a failure of any is looked at.
async fn run<T>(
    health: &Health,
    acquires: bool,
    work: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, DomainError> {
    if acquires { health.acquiring(work).await } else { work.await.map_err(|error| health.failed(error)) }
}

/// Starts a write transaction (see `Dialect::begin`).
pub(crate) async fn begin<D: Dialect>(db: &Db<D>) -> Result<Tx<D>, DomainError> {
    let tx = db.health.acquiring(D::begin(&db.pool)).await?;
    Ok(Tx { tx, health: db.health.clone() })
}

/// Commits, as a `DomainError` on failure.
pub(crate) async fn commit<D: Dialect>(tx: Tx<D>) -> Result<(), DomainError> {
    let Tx { tx, health } = tx;
    tx.commit().await.map_err(|error| health.failed(error))
}

/// Rolls back, as a `DomainError` on failure.
pub(crate) async fn rollback<D: Dialect>(tx: Tx<D>) -> Result<(), DomainError> {
    let Tx { tx, health } = tx;
    tx.rollback().await.map_err(|error| health.failed(error))
}
