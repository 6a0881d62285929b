//! Wiring: the one place that picks adapters by configuration and hands them to services.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::{
    adapters::{
        Database,
        breaker::{BreakerExecutor, BreakerProjects, CircuitBreaker},
        cache::{CachedApiKeyRepo, CachedProjectSource},
        kube::{KubeClients, KubeExecutor, KubeProjects},
        local::{
            LocalExecutor, LocalProjects, SandboxHealth,
            sandbox::{self, Sandbox, ServerFiles},
        },
        memory::MemoryRateLimiter,
        webhook_sender::HttpWebhookSender,
    },
    config::{Config, ExecutorChoice, RateLimitStore, SandboxMode},
    domain::ApiKeySecret,
    http::{self, AppState, client_ip::ClientIpResolver, state::Services},
    ports::{Clock, CommandQueue, DeliveryQueue, Executor, HealthCheck, ProjectSource, RateLimiter, SystemClock},
    services::{
        ApiKeyService, AuditService, CommandService, DispatchSettings, DispatchWake, ProjectService, QueueService,
        QueueWorker, RateLimitService, RunningCommands, WebhookDispatcher, WebhookService,
    },
};

/// How often the maintenance task writes batched `last_used_at` times and purges old counts.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(5);
/// How often webhook deliveries and audit entries past their retention are deleted.
const DELIVERY_PURGE_EVERY: Duration = Duration::from_secs(3600);

/// How long a local projects folder listing (or lookup) is reused: at most `CACHE_TTL`.
const LOCAL_PROJECTS_FRESHNESS: Duration = Duration::from_secs(1);

/// A built server: listening, migrated, wired; `run_until_stopped` serves it.
pub struct App {
    listener: TcpListener,
    router: axum::Router,
    database: Database,
    upkeep: Upkeep,
    workers: Vec<QueueWorker>,
    dispatcher: Option<WebhookDispatcher>,
    config: Config,
    /// The admin key generated on first start, if this start generated one.
    pub generated_admin_key: Option<ApiKeySecret>,
}

impl App {
    /// Binds first (so `RDEV_LISTEN=…:0` works and the port is known), then connects, migrates,
    /// bootstraps the first key and wires the services.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// `build` with another clock, so tests can move time instead of waiting for it.
    pub async fn build_with_clock(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        config.validate()?;
        crate::install_crypto_provider();
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {} (RDEV_LISTEN)", config.listen))?;
        let database = Database::connect(&config.database_url, config.db_max_connections).await?;
        database.migrate().await?;
        tracing::info!(database = database.kind(), "database ready");

        let key_repo = Arc::new(CachedApiKeyRepo::new(database.api_keys(), config.cache_ttl));
        let keys = Arc::new(ApiKeyService::new(key_repo, clock.clone()));
        let generated_admin_key =
            keys.bootstrap(config.bootstrap_secret().as_ref()).await.context("creating the first API key")?;

        let (source, executor, executor_health) = executor_adapters(&config, clock.clone()).await?;
        let projects = Arc::new(ProjectService::new(source));
        let audit = Arc::new(AuditService::new(database.audit_log(), clock.clone()));
        let wake = DispatchWake::default();
        let commands = Arc::new(CommandService::new(
            projects.clone(),
            executor.clone(),
            audit.clone(),
            wake.clone(),
            config.command_timeout,
        ));
        let queue = database.command_queue();
        let running = Arc::new(RunningCommands::default());
        let queue_service = Arc::new(QueueService::new(
            queue.clone(),
            projects.clone(),
            running.clone(),
            clock.clone(),
            config.command_timeout,
        ));
        let replica = uuid::Uuid::new_v4().simple().to_string();
        let workers = (0..config.queue_workers)
            .map(|i| QueueWorker {
                name: format!("{}-{}-{i}", std::process::id(), &replica[..8]),
                queue: queue.clone(),
                projects: projects.clone(),
                executor: executor.clone(),
                audit: audit.clone(),
                deliveries: wake.clone(),
                running: running.clone(),
                clock: clock.clone(),
                lease: config.queue_lease,
            })
            .collect();

        let (webhook_repo, deliveries) = database.webhooks();
        let webhooks =
            Arc::new(WebhookService::new(webhook_repo, clock.clone(), config.webhook_allow_private, wake.clone()));
        let dispatcher = if config.webhook_workers == 0 {
            None
        } else {
            let sender = HttpWebhookSender::new(config.webhook_timeout, config.webhook_allow_private)
                .context("building the webhook HTTP client")?;
            Some(WebhookDispatcher {
                name: format!("{}-{}-webhooks", std::process::id(), &replica[..8]),
                queue: deliveries.clone(),
                sender: Arc::new(sender),
                clock: clock.clone(),
                settings: DispatchSettings {
                    retry_schedule: config.webhook_retry_schedule.clone(),
                    timeout: config.webhook_timeout,
                    concurrency: config.webhook_workers as usize,
                },
                wake: wake.clone(),
            })
        };

        let rate_limits = Arc::new(RateLimitService::new(
            rate_limiter(&config, &database),
            clock.clone(),
            config.rate_limit_per_minute,
            config.rate_limit_fail_open,
        ));

        let mut readiness: Vec<Arc<dyn HealthCheck>> = vec![Arc::new(database.clone())];
        readiness.extend(executor_health);
        let state = AppState::new(Services {
            keys: keys.clone(),
            projects,
            commands,
            queue: queue_service,
            audit: audit.clone(),
            webhooks,
            rate_limits: rate_limits.clone(),
            client_ip: Arc::new(ClientIpResolver::new(config.trusted_proxies.clone())),
            readiness: readiness.into(),
            metrics: crate::telemetry::metrics::handle(),
            max_body_bytes: config.max_body_bytes,
        });
        let router = http::router(state);
        let upkeep = Upkeep {
            keys,
            rate_limits,
            queue,
            deliveries,
            audit,
            webhook_retention: config.webhook_retention,
            audit_retention: config.audit_retention,
            clock,
        };
        Ok(Self { listener, router, database, upkeep, workers, dispatcher, config, generated_admin_key })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves and runs the queue workers until `shutdown` completes; then stops accepting
    /// connections and claiming commands, and lets requests and commands in flight finish for up
    /// to `RDEV_SHUTDOWN_GRACE` before closing the database. Commands still running after that
    /// are killed with the process; their leases expire and another replica records them.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(false);
        let mut workers = tokio::task::JoinSet::new();
        for worker in self.workers {
            workers.spawn(worker.run(stopping_rx.clone()));
        }
        if let Some(dispatcher) = self.dispatcher {
            workers.spawn(dispatcher.run(stopping_rx.clone()));
        }
        let service = self.router.into_make_service_with_connect_info::<SocketAddr>();
        let server = axum::serve(self.listener, service).with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections or claims, finishing what is in flight");
            let _ = stopping_tx.send(true);
        });
        let maintenance = tokio::spawn(self.upkeep.clone().run());
        let grace = self.config.shutdown_grace;
        let mut stopping = stopping_rx;
        let grace_expired = async move {
            let _ = stopping.wait_for(|stopping| *stopping).await;
            tokio::time::sleep(grace).await;
        };
        let drained = async {
            server.await.context("serving HTTP")?;
            while workers.join_next().await.is_some() {}
            anyhow::Ok(())
        };
        tokio::select! {
            result = drained => result?,
            () = grace_expired => tracing::warn!(?grace, "shutdown grace expired with work still running"),
        }
        maintenance.abort();
        if let Err(error) = self.upkeep.keys.usage().flush().await {
            tracing::warn!(%error, "could not write API key usage at shutdown");
        }
        self.database.close().await;
        Ok(())
    }
}

/// The rate-limit counter: in memory when one process sees every request (SQLite, or asked
/// for), else in the database every replica shares.
fn rate_limiter(config: &Config, database: &Database) -> Arc<dyn RateLimiter> {
    match (config.rate_limit_store, database) {
        (RateLimitStore::Memory, _) | (RateLimitStore::Auto, Database::Sqlite(_)) => {
            Arc::new(MemoryRateLimiter::default())
        }
        _ => database.rate_limiter(),
    }
}

/// The project source and executor the configuration asks for, and their readiness check.
/// Kubernetes: both behind one circuit breaker, and projects cached for `CACHE_TTL` in front of
/// it (a cache hit never touches the breaker or the API).
async fn executor_adapters(
    config: &Config,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<(Arc<dyn ProjectSource>, Arc<dyn Executor>, Option<Arc<dyn HealthCheck>>)> {
    match config.executor {
        ExecutorChoice::Local => {
            let projects = LocalProjects::new(&config.projects_dir);
            projects
                .ensure_exists()
                .await
                .with_context(|| format!("creating {} (RDEV_PROJECTS_DIR)", config.projects_dir.display()))?;
            let sandbox = Arc::new(start_sandbox(config).await?);
            let root = sandbox.projects_root().to_path_buf();
            let executor = LocalExecutor::new(root, config.max_output_bytes, sandbox.clone());
            // Reading the folder costs a trip to the blocking pool per lookup, which dominates
            // a `GET /projects`; a second of staleness is invisible to someone creating folders.
            let freshness = config.cache_ttl.min(LOCAL_PROJECTS_FRESHNESS);
            let projects = CachedProjectSource::new(Arc::new(projects), freshness, clock);
            Ok((Arc::new(projects), Arc::new(executor), Some(Arc::new(SandboxHealth(sandbox)))))
        }
        ExecutorChoice::Kubernetes => {
            let clients = KubeClients::connect(config.kubeconfig.as_deref(), config.kube_api_timeout).await?;
            let breaker = Arc::new(CircuitBreaker::new(
                "kubernetes",
                config.breaker_failures,
                config.breaker_cooldown,
                clock.clone(),
            ));
            let projects =
                BreakerProjects { breaker: breaker.clone(), inner: KubeProjects::new(clients.api, &config.namespace) };
            let projects = CachedProjectSource::new(Arc::new(projects), config.cache_ttl, clock);
            let exec =
                KubeExecutor::new(clients.exec, &config.namespace, config.kube_api_timeout, config.max_output_bytes);
            let executor = BreakerExecutor { breaker: breaker.clone(), inner: exec };
            tracing::info!(namespace = %config.namespace, "using the Kubernetes executor");
            Ok((Arc::new(projects), Arc::new(executor), Some(breaker)))
        }
    }
}

/// The helper that starts local commands, confined as `RDEV_SANDBOX` asks. From here on no
/// other process of this user may read the server's memory or `/proc` entries either.
async fn start_sandbox(config: &Config) -> anyhow::Result<Sandbox> {
    let files = ServerFiles {
        database_file: Database::sqlite_file(&config.database_url),
        database_socket_dir: Database::socket_dir(&config.database_url),
    };
    let confine = config.sandbox == SandboxMode::Required;
    let (helper, warnings) = sandbox::helper_config(&config.projects_dir, confine, &config.sandbox_read_paths, &files)
        .context("deciding what commands may read (RDEV_SANDBOX)")?;
    warnings.iter().for_each(|warning| tracing::warn!("{warning}"));
    let program = match &config.sandbox_helper {
        Some(program) => program.clone(),
        None => std::env::current_exe().context("finding this binary, which starts commands")?,
    };
    let sandbox = Sandbox::start(program, helper).await.context("starting the sandbox helper (RDEV_SANDBOX)")?;
    let capabilities = sandbox.capabilities();
    if capabilities.confined {
        tracing::info!(
            landlock_abi = capabilities.landlock_abi,
            user_namespace = capabilities.user_namespace,
            "commands run confined"
        );
    } else {
        tracing::warn!("RDEV_SANDBOX=off: commands run unconfined and can read whatever this server's user can");
    }
    nix::sys::prctl::set_dumpable(false).context("making this process's memory unreadable to others")?;
    Ok(sandbox)
}

/// Background upkeep that must not cost requests anything: batched writes, purges, and taking
/// back the commands of replicas whose leases ran out.
#[derive(Clone)]
struct Upkeep {
    keys: Arc<ApiKeyService>,
    rate_limits: Arc<RateLimitService>,
    queue: Arc<dyn CommandQueue>,
    deliveries: Arc<dyn DeliveryQueue>,
    audit: Arc<AuditService>,
    webhook_retention: Duration,
    audit_retention: Duration,
    clock: Arc<dyn Clock>,
}

impl Upkeep {
    async fn run(self) {
        publish_queue_depth(self.queue.as_ref()).await;
        // The first full round comes one period after start: nothing is pending to write yet.
        let mut every = tokio::time::interval_at(tokio::time::Instant::now() + MAINTENANCE_EVERY, MAINTENANCE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut purged_deliveries_at: Option<tokio::time::Instant> = None;
        loop {
            every.tick().await;
            if let Err(error) = self.keys.usage().flush().await {
                tracing::warn!(%error, "could not write API key usage; will retry");
            }
            if let Err(error) = self.rate_limits.purge_expired().await {
                tracing::warn!(%error, "could not purge old rate-limit counts; will retry");
            }
            publish_queue_depth(self.queue.as_ref()).await;
            match self.queue.recover_expired(self.clock.now()).await {
                Ok(lost) => {
                    lost.iter().for_each(|c| tracing::warn!(command.id = %c.id, "command lost with its worker"))
                }
                Err(error) => tracing::warn!(%error, "could not recover expired command leases; will retry"),
            }
            if purged_deliveries_at.is_none_or(|at| at.elapsed() >= DELIVERY_PURGE_EVERY) {
                purged_deliveries_at = Some(tokio::time::Instant::now());
                self.purge_old_deliveries().await;
                self.purge_old_audit_entries().await;
            }
        }
    }

    async fn purge_old_audit_entries(&self) {
        match self.audit.purge_older_than(self.audit_retention).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "deleted audit entries older than RDEV_AUDIT_RETENTION"),
            Err(error) => tracing::warn!(%error, "could not purge old audit entries; will retry"),
        }
    }

    async fn purge_old_deliveries(&self) {
        let retention = chrono::Duration::from_std(self.webhook_retention).unwrap_or(chrono::Duration::MAX);
        match self.deliveries.purge(self.clock.now() - retention).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "deleted webhook deliveries older than RDEV_WEBHOOK_RETENTION"),
            Err(error) => tracing::warn!(%error, "could not purge old webhook deliveries; will retry"),
        }
    }
}

/// A future that resolves on SIGINT or SIGTERM. The handlers are registered here, before it is
/// first polled, so a signal that arrives right after start-up is not lost (nor fatal).
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
    })
}

/// `command_queue_depth{priority}` for every priority, zeros included, so the series exist.
async fn publish_queue_depth(queue: &dyn CommandQueue) {
    match queue.depth().await {
        Ok(depth) => {
            for priority in 0..=crate::domain::command::MAX_PRIORITY {
                let waiting = depth.iter().find(|(p, _)| *p == priority).map_or(0, |(_, n)| *n);
                metrics::gauge!(crate::telemetry::metrics::COMMAND_QUEUE_DEPTH, "priority" => priority.to_string())
                    .set(waiting as f64);
            }
        }
        Err(error) => tracing::warn!(%error, "could not measure the queue"),
    }
}
