//! Adapters: the ports implemented with real technology. Each module names its technology;
//! `app.rs` is the only place that picks between them.
//!
//! - `cache`: moka decorators that keep hot lookups off the database for `CACHE_TTL`.
//! - `db`: connecting to Postgres or SQLite by URL, running the embedded migrations.
//! - `postgres`, `sqlite`: the repositories, one file per aggregate.
//! - `local`: projects as folders and commands as child processes.
//! - `memory`: in-process state for single-process setups (the SQLite rate limiter).
//! - `kube`: projects as labelled pods and commands over pod exec, behind `breaker`.

mod audit_write;
pub mod breaker;
pub mod cache;
pub(crate) mod capture;
pub mod db;
mod group_commit;
pub mod kube;
pub mod local;
pub mod memory;
pub mod postgres;
mod queue_rows;
mod rows;
pub mod sqlite;
mod webhook_rows;
pub mod webhook_sender;

pub use db::Database;
