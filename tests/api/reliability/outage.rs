//! A database that stops answering under load: Postgres cut off by a proxy, SQLite locked by
//! another writer. Answers come fast (503 `UNAVAILABLE` with `Retry-After`), `/ready` says so at
//! once, service returns within a second of the database, and no execution goes unaudited.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use secrecy::ExposeSecret as _;
use serde_json::json;
use sqlx::Connection as _;

use super::{eventually, executions_audited, runs};
use crate::{
    on_both_databases,
    support::{Db, TestApp, proxy::TcpProxy},
};

on_both_databases!(an_outage_is_answered_fast_and_loses_no_audit_row);

/// Makes the database unreachable for the app, and reachable again.
enum Outage {
    /// Postgres behind a proxy the test cuts.
    Proxy(TcpProxy),
    /// SQLite with another connection holding its write lock.
    Lock { url: String, holder: Option<sqlx::SqliteConnection> },
}

impl Outage {
    async fn begin(&mut self) {
        match self {
            Outage::Proxy(proxy) => proxy.cut(),
            Outage::Lock { url, holder } => {
                let mut connection = sqlx::SqliteConnection::connect(url).await.unwrap();
                sqlx::query("BEGIN IMMEDIATE").execute(&mut connection).await.unwrap();
                *holder = Some(connection);
            }
        }
    }

    async fn end(&mut self) {
        match self {
            Outage::Proxy(proxy) => proxy.restore(),
            Outage::Lock { holder, .. } => {
                let mut connection = holder.take().unwrap();
                sqlx::query("ROLLBACK").execute(&mut connection).await.unwrap();
            }
        }
    }
}

/// What the load saw: answers by status, and the slowest answer that started while the
/// database was already known to be down (after the first 503).
#[derive(Default)]
struct Seen {
    ok: usize,
    unavailable: usize,
    other: Vec<String>,
    first_unavailable_at: Option<Instant>,
    slowest_after_first: Duration,
}

async fn an_outage_is_answered_fast_and_loses_no_audit_row(db: Db) {
    let proxy = match db {
        Db::Postgres => Some(TcpProxy::start("127.0.0.1:5432".parse().unwrap()).await),
        Db::Sqlite => None,
    };
    let app = TestApp::on(db)
        .configure(|c| {
            if let Some(proxy) = &proxy {
                c.database.url = proxy.postgres_url(c.database.url.expose_secret()).into();
            }
            c.access.rate_limit_per_minute = 1_000_000;
        })
        .await;
    let mut outage = match proxy {
        Some(proxy) => Outage::Proxy(proxy),
        None => Outage::Lock { url: app.database_url.clone(), holder: None },
    };
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (client, url, key, seen, stop) =
            (app.client.clone(), app.url("/projects/hello/shell"), app.admin_key.clone(), seen.clone(), stop.clone());
        load.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let reply = client.post(&url).header("X-API-Key", &key).json(&json!({"command": "echo r >> runs"}));
                let reply = reply.send().await.unwrap();
                let status = reply.status().as_u16();
                let retry_after = reply.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
                let body: serde_json::Value = reply.json().await.unwrap();
                let mut seen = seen.lock().unwrap();
                match status {
                    200 => seen.ok += 1,
                    503 => {
                        assert_eq!(body["error"]["code"], "UNAVAILABLE", "{body}");
                        assert!(retry_after.is_some_and(|s| s.parse::<u32>().is_ok()), "503 without Retry-After");
                        seen.unavailable += 1;
                        if let Some(first) = seen.first_unavailable_at {
                            if started > first {
                                seen.slowest_after_first = seen.slowest_after_first.max(started.elapsed());
                            }
                        } else {
                            seen.first_unavailable_at = Some(Instant::now());
                        }
                    }
                    other => seen.other.push(format!("{other}: {body}")),
                }
            }
        });
    }
    let ready = |app: &TestApp| {
        let (client, url) = (app.client.clone(), app.url("/ready"));
        async move { client.get(url).send().await.unwrap().status().as_u16() }
    };
    eventually("some commands ran", Duration::from_secs(10), async || seen.lock().unwrap().ok >= 20).await;

    let cut_at = Instant::now();
    outage.begin().await;
    eventually("the outage was noticed", Duration::from_secs(5), async || seen.lock().unwrap().unavailable > 0).await;
    let noticed = seen.lock().unwrap().first_unavailable_at.unwrap() - cut_at;
    eventually("more 503s", Duration::from_secs(5), async || seen.lock().unwrap().unavailable > 50).await;
    let asked = Instant::now();
    assert_eq!(ready(&app).await, 503);
    let ready_answered = asked.elapsed();

    outage.end().await;
    let back = eventually("ready again", Duration::from_secs(5), async || ready(&app).await == 200).await;
    let ok_before = seen.lock().unwrap().ok;
    eventually("commands succeed again", Duration::from_secs(5), async || seen.lock().unwrap().ok > ok_before + 10)
        .await;
    stop.store(true, Ordering::Relaxed);
    while load.join_next().await.is_some() {}

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    println!(
        "{db:?}: first 503 {noticed:?} after the cut; slowest 503 after it {:?}; /ready {ready_answered:?}; \
         back {back:?} after the database; {} ok, {} unavailable",
        seen.slowest_after_first, seen.ok, seen.unavailable
    );
    assert!(seen.other.is_empty(), "only 200s and 503s: {:?}", seen.other);
    assert!(noticed < Duration::from_secs(3), "the outage took {noticed:?} to notice");
    assert!(seen.slowest_after_first < Duration::from_secs(1), "503s took up to {:?}", seen.slowest_after_first);
    assert!(ready_answered < Duration::from_secs(1), "/ready took {ready_answered:?}");
    assert!(back < Duration::from_secs(2), "service came back {back:?} after the database");

    // Every process started has its row (those that ended during the outage were kept and
    // written once the database answered), every 200 among them.
    let started = runs(&app, "hello", "runs");
    eventually("the kept entries are written", Duration::from_secs(5), async || {
        executions_audited(&app, "hello").await.len() == started
    })
    .await;
    let audited = executions_audited(&app, "hello").await;
    let succeeded = audited.iter().filter(|e| e["outcome"] == "succeeded").count();
    assert!(succeeded >= seen.ok, "{succeeded} succeeded rows for {} answers of 200", seen.ok);
}
