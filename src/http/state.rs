//! What every handler can reach: the services, and the checks behind `/ready`.

use std::sync::Arc;

use super::client_ip::ClientIpResolver;
use crate::{
    domain::Quotas,
    ports::HealthCheck,
    services::{
        ApiKeyService, AuditService, CommandService, FileService, IdempotencyService, OutputService, ProjectService,
        QueueService, RateLimitService, SessionService, TerminalService, WebhookService,
    },
};

/// Cloned for every request by each extractor and middleware that takes it, so it is one `Arc`:
/// a clone is one atomic increment, not one per service.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

pub struct Services {
    pub keys: Arc<ApiKeyService>,
    pub projects: Arc<ProjectService>,
    pub commands: Arc<CommandService>,
    pub queue: Arc<QueueService>,
    pub audit: Arc<AuditService>,
    pub webhooks: Arc<WebhookService>,
    pub rate_limits: Arc<RateLimitService>,
    pub idempotency: Arc<IdempotencyService>,
    pub output: Arc<OutputService>,
    pub sessions: Arc<SessionService>,
    pub files: Arc<FileService>,
    pub terminals: Arc<TerminalService>,
    /// The quotas of keys that set none of their own (`RDEV_MAX_*_PER_KEY`).
    pub quotas: Quotas,
    pub client_ip: Arc<ClientIpResolver>,
    pub readiness: Arc<[Arc<dyn HealthCheck>]>,
    /// Renders `/metrics`.
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// `RDEV_MAX_STDIN_BYTES`: the routes that run commands take bodies this much larger, twice.
    pub max_stdin_bytes: usize,
    /// `RDEV_MCP_ALLOWED_ORIGINS`: the browser origins `/mcp` serves (none by default).
    pub mcp_allowed_origins: Arc<[String]>,
}

impl Services {
    /// The body limit of the routes that run commands: room for stdin besides the command, its
    /// variables and JSON's framing (base64 takes 4/3 of the bytes; JSON escapes of text more).
    pub fn execute_body_limit(&self) -> usize {
        self.max_body_bytes.saturating_add(self.max_stdin_bytes.saturating_mul(2))
    }
}
