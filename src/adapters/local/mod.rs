//! The local executor: projects are folders directly under the projects directory, and commands
//! run confined (see `sandbox`), started by a helper process.

mod executor;
mod files;
mod projects;
mod pty;
pub mod sandbox;
mod terminal;

pub use executor::{LocalExecutor, SandboxHealth};
pub use files::{FileLimits, LocalFiles};
pub use projects::LocalProjects;
