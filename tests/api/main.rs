//! Integration tests: the real server on a random port, over real HTTP, on a fresh database
//! (SQLite file or Postgres database) per test, running real child processes.
//!
//! Two groups look one layer down: `contracts` holds every storage adapter to its port's
//! promises, and `services` checks the business rules of the queue and the webhook dispatcher
//! on in-memory fakes. What they share lives in `support`.

mod support;

mod architecture;
mod auth;
mod binary;
mod cli;
mod console;
mod contracts;
mod docs;
mod errors;
mod escapes;
mod fair_queue;
mod files;
mod files_bounds;
mod followers;
mod idempotency;
mod isolation;
mod keys;
mod kube;
mod lifecycle;
mod limits;
mod mcp;
mod observability;
mod output;
mod projects;
mod queue;
mod quotas;
mod reliability;
mod replicas;
mod revocation;
mod sandbox;
mod security;
mod services;
mod session_commands;
mod sessions;
mod shell;
mod signing;
mod stdin;
mod stream;
mod terminal;
mod webhooks;
