//! The local executor: projects are folders directly under the projects directory, and commands
//! run as child processes of this server, each in its own process group.

mod executor;
mod projects;

pub use executor::LocalExecutor;
pub use projects::LocalProjects;
