//! The Kubernetes executor: projects are pods labelled `rdev.orchard9.ai/project=true` in one
//! namespace, identified by their `rdev.orchard9.ai/project-id` label; commands run over pod exec
//! (kube-rs, rustls). `app` wraps the exec in the circuit breaker; projects come from a pod watch held in memory.

mod client;
mod errors;
mod exec;
mod executor;
mod files;
mod projects;
mod script;
mod terminal;
mod watch;

pub use client::KubeClients;
pub use executor::KubeExecutor;
pub use files::KubeFiles;
pub use terminal::KubeTerminals;
pub use watch::{WatchHealth, WatchedProjects};

pub const PROJECT_LABEL: &str = "rdev.orchard9.ai/project";
pub const PROJECT_ID_LABEL: &str = "rdev.orchard9.ai/project-id";
pub const CONTAINER_ANNOTATION: &str = "rdev.orchard9.ai/container";
