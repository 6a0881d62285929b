//! Adapters: the ports implemented with real technology. Each module names its technology;
//! `app` is the only place that picks between them.
//!
//! - `cache`: moka decorators that keep hot lookups off the database for `CACHE_TTL`.
//! - `sql`: the storage ports on Postgres and SQLite (connection by URL, migrations, one file
//!   per port and dialect, each aggregate's rows read and bound once).
//! - `local`: projects as folders and commands as child processes.
//! - `memory`: in-process state for single-process setups (the SQLite rate limiter).
//! - `kube`: projects as labelled pods and commands over pod exec, behind `breaker`.
//! - `blocking_pool`: whether tokio's blocking threads take work (a readiness check).

pub mod blocking_pool;
pub mod breaker;
pub mod cache;
pub(crate) mod capture;
pub mod kube;
pub mod local;
pub mod memory;
pub(crate) mod session_shell;
pub mod sql;
pub(crate) mod terminal;
pub mod webhook_sender;

pub use sql::Database;
