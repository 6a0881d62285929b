//! What the shared rate limiter costs per request: times `RateLimiter::hit` on SQLite and on
//! Postgres, one caller at a time and 16 at once, the way requests reach it.
//!
//! `cargo run --release --example limiter_cost [postgres-admin-url]`

use std::{sync::Arc, time::Instant};

use rdev_api::{adapters::Database, ports::RateLimiter};
use sqlx::Connection as _;

const HITS: u32 = 4000;
const CONCURRENCY: u32 = 16;

async fn measure(name: &str, limiter: Arc<dyn RateLimiter>) -> anyhow::Result<()> {
    let key = uuid::Uuid::new_v4();
    let start = Instant::now();
    for _ in 0..HITS {
        limiter.hit(key, 1_000_000, 60, chrono::Utc::now()).await?;
    }
    let serial = start.elapsed() / HITS;

    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let limiter = limiter.clone();
        let key = uuid::Uuid::new_v4();
        tasks.push(tokio::spawn(async move {
            for _ in 0..HITS / CONCURRENCY {
                limiter.hit(key, 1_000_000, 60, chrono::Utc::now()).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = start.elapsed();
    println!(
        "{name:<9} one caller: {:>6.0} µs/hit   {CONCURRENCY} callers: {:>7.0} hits/s",
        serial.as_secs_f64() * 1e6,
        f64::from(HITS) / elapsed.as_secs_f64()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let sqlite = Database::connect(&format!("sqlite://{}/bench.db", dir.path().display()), 16).await?;
    sqlite.migrate().await?;
    measure("sqlite", sqlite.rate_limiter()).await?;

    let admin =
        std::env::args().nth(1).unwrap_or_else(|| "postgres://postgres:postgres@127.0.0.1:5432/postgres".into());
    let name = format!("rdev_bench_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await?;
    let url = format!("{}/{name}", admin.rsplit_once('/').map_or(admin.as_str(), |(base, _)| base));
    let postgres = Database::connect(&url, 16).await?;
    postgres.migrate().await?;
    measure("postgres", postgres.rate_limiter()).await?;
    postgres.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)"))).execute(&mut conn).await?;
    Ok(())
}
