//! Each subsystem's services and background workers, wired from the configuration and the
//! database. `App::build` puts them together; `rdev-api keys create` uses `keys` alone.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;

use crate::{
    adapters::{Database, cache::CachedApiKeyRepo, memory::MemoryRateLimiter, webhook_sender::HttpWebhookSender},
    config::{Config, RateLimitStore},
    domain::CommandDefaults,
    ports::{Clock, CommandQueue, DeliveryQueue, Executor, OutputLog, RateLimiter},
    services::{
        ApiKeyService, AuditService, CommandService, CommandStores, DispatchSettings, DispatchWake, FollowLimits,
        KeyWatch, OutputService, ProjectService, QueueService, QueueWorker, RateLimitService, RunningCommands,
        SessionService, WebhookDispatcher, WebhookService,
    },
};

/// API keys, looked up through a cache fresh for `cache_ttl`.
pub fn keys(database: &Database, cache_ttl: Duration, clock: Arc<dyn Clock>) -> Arc<ApiKeyService> {
    let stored = database.api_keys();
    let cached = Arc::new(CachedApiKeyRepo::new(stored.clone(), cache_ttl));
    Arc::new(ApiKeyService::new(cached, stored, clock, cache_ttl))
}

/// Running commands now and from the queue.
pub(super) struct Commands {
    pub commands: Arc<CommandService>,
    pub queue: Arc<QueueService>,
    pub workers: Vec<QueueWorker>,
    /// For the upkeep (lease recovery, the depth gauge).
    pub store: Arc<dyn CommandQueue>,
    /// Output logs: written by the workers, read by `/commands/{id}/output` and `/events`.
    pub output: Arc<OutputService>,
    /// For the upkeep (retention).
    pub output_log: Arc<dyn OutputLog>,
    /// Sessions: their commands run through `commands`.
    pub sessions: Arc<SessionService>,
}

/// What the command subsystem runs on.
pub(super) struct CommandParts {
    pub projects: Arc<ProjectService>,
    pub executor: Arc<dyn Executor>,
    pub audit: Arc<AuditService>,
    pub deliveries: DispatchWake,
    pub clock: Arc<dyn Clock>,
    /// Tells this replica's workers apart from other replicas' in their claims.
    pub replica: String,
    /// Ends the commands of keys that may no longer act.
    pub keys: Arc<KeyWatch>,
}

pub(super) fn commands(config: &Config, database: &Database, parts: CommandParts) -> Commands {
    let CommandParts { projects, executor, audit, deliveries, clock, replica, keys } = parts;
    let defaults = CommandDefaults {
        timeout: config.executor.command_timeout,
        max_output_bytes: config.executor.max_output_bytes,
        max_stdin_bytes: config.executor.max_stdin_bytes,
    };
    let store = database.command_queue();
    // One instance per replica: its followers share one wake-up (and, on Postgres, one LISTEN).
    let output_log = database.output_log();
    let sessions = database.sessions();
    let stores = CommandStores {
        commands: store.clone(),
        sessions: sessions.clone(),
        output: output_log.clone(),
        clock: clock.clone(),
        replica: format!("{}-{replica}-shell", std::process::id()),
    };
    let commands = Arc::new(CommandService::new(
        projects.clone(),
        executor.clone(),
        audit.clone(),
        deliveries.clone(),
        database.status(),
        defaults,
        stores,
    ));
    let running = Arc::new(RunningCommands::default());
    let queue = Arc::new(QueueService::new(
        store.clone(),
        projects.clone(),
        audit.clone(),
        running.clone(),
        clock.clone(),
        defaults,
    ));
    let workers = (0..config.queue.workers)
        .map(|i| QueueWorker {
            name: format!("{}-{replica}-{i}", std::process::id()),
            queue: store.clone(),
            projects: projects.clone(),
            executor: executor.clone(),
            output: output_log.clone(),
            audit: audit.clone(),
            deliveries: deliveries.clone(),
            running: running.clone(),
            keys: keys.clone(),
            workers: config.queue.workers as usize,
            clock: clock.clone(),
            lease: config.queue.lease,
        })
        .collect();
    let follow_limits = FollowLimits {
        per_replica: config.server.max_followers,
        // Leases, claims and output writes keep the rest of the pool.
        reads: (config.database.max_connections as usize / 4).max(1),
    };
    let output = Arc::new(OutputService::new(output_log.clone(), store.clone(), follow_limits));
    let sessions = Arc::new(SessionService::new(
        sessions,
        projects,
        commands.clone(),
        clock.clone(),
        config.executor.session_idle_timeout,
    ));
    Commands { commands, queue, workers, store, output, output_log, sessions }
}

/// Webhook subscriptions, and this replica's dispatcher (none with `RDEV_WEBHOOK_WORKERS=0`).
pub(super) struct Webhooks {
    pub service: Arc<WebhookService>,
    pub dispatcher: Option<WebhookDispatcher>,
    /// For the upkeep (purging old deliveries).
    pub deliveries: Arc<dyn DeliveryQueue>,
}

pub(super) fn webhooks(
    config: &Config,
    database: &Database,
    wake: DispatchWake,
    clock: Arc<dyn Clock>,
    replica: &str,
) -> anyhow::Result<Webhooks> {
    let settings = &config.webhooks;
    let (repo, deliveries) = database.webhooks();
    let service = Arc::new(WebhookService::new(repo, clock.clone(), settings.allow_private, wake.clone()));
    let dispatcher = if settings.workers == 0 {
        None
    } else {
        let sender = HttpWebhookSender::new(settings.timeout, settings.allow_private)
            .context("building the webhook HTTP client")?;
        Some(WebhookDispatcher {
            name: format!("{}-{replica}-webhooks", std::process::id()),
            queue: deliveries.clone(),
            sender: Arc::new(sender),
            clock,
            settings: DispatchSettings {
                retry_schedule: settings.retry_schedule.clone(),
                timeout: settings.timeout,
                concurrency: settings.workers as usize,
            },
            wake,
        })
    };
    Ok(Webhooks { service, dispatcher, deliveries })
}

/// Rate limits, counted in memory when one process sees every request (SQLite, or asked for),
/// else in the database every replica shares.
pub(super) fn rate_limits(config: &Config, database: &Database, clock: Arc<dyn Clock>) -> Arc<RateLimitService> {
    let limiter: Arc<dyn RateLimiter> = match (config.access.rate_limit_store, database.kind()) {
        (RateLimitStore::Memory, _) | (RateLimitStore::Auto, "sqlite") => Arc::new(MemoryRateLimiter::default()),
        _ => database.rate_limiter(),
    };
    Arc::new(RateLimitService::new(
        limiter,
        clock,
        config.access.rate_limit_per_minute,
        config.access.rate_limit_fail_open,
    ))
}
