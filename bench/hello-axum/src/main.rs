//! A bare axum server answering `GET /` with `hello`: the floor of any axum service on this
//! machine, against which `bench/run` compares rdev-api's cheapest authenticated read.
//!
//! Usage: `hello-axum [ADDR]` (default `127.0.0.1:0`). Prints `listening addr=<addr>` on stdout
//! once bound, the same line rdev-api prints, so `bench/run` waits for both the same way.
//! Same runtime as rdev-api (`#[tokio::main]`, multi-threaded) so the comparison is like for like.

use std::io::Write as _;

use axum::{Router, routing::get};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening addr={}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let app = Router::new().route("/", get(|| async { "hello" }));
    axum::serve(listener, app).await
}
