//! What every handler can reach: the services, and the checks behind `/ready`.

use std::sync::Arc;

use crate::{
    ports::HealthCheck,
    services::{ApiKeyService, AuditService, CommandService, ProjectService},
};

#[derive(Clone)]
pub struct AppState {
    pub keys: Arc<ApiKeyService>,
    pub projects: Arc<ProjectService>,
    pub commands: Arc<CommandService>,
    pub audit: Arc<AuditService>,
    pub readiness: Arc<[Arc<dyn HealthCheck>]>,
}
