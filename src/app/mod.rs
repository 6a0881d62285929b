//! Wiring: the one place that picks adapters by configuration and hands them to services.
//!
//! # Layout
//! - this file: `App`, built from the subsystems and run until stopped.
//! - `subsystems`: keys, commands and the queue, webhooks, rate limits.
//! - `executors`: where projects come from and where commands run.
//! - `upkeep`: the background maintenance every replica runs.

mod executors;
pub mod subsystems;
mod upkeep;

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use secrecy::ExposeSecret as _;
use tokio::net::TcpListener;

use self::{subsystems::CommandParts, upkeep::Upkeep};
use crate::{
    adapters::Database,
    config::Config,
    domain::ApiKeySecret,
    http::{self, AppState, client_ip::ClientIpResolver, state::Services},
    ports::{Clock, HealthCheck, SystemClock},
    services::{
        AuditService, CommandService, DispatchWake, FileService, IdempotencyService, ProjectService, QueueWorker,
        TerminalLimits, TerminalService, WebhookDispatcher,
    },
};

/// A built server: listening, migrated, wired; `run_until_stopped` serves it.
pub struct App {
    listener: TcpListener,
    router: axum::Router,
    database: Database,
    upkeep: Upkeep,
    commands: Arc<CommandService>,
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
        let listener = TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("listening on {} (RDEV_LISTEN)", config.server.listen))?;
        let database = Database::connect(config.database.url.expose_secret(), config.database.max_connections).await?;
        database.migrate().await?;
        tracing::info!(database = database.kind(), "database ready");

        let keys = subsystems::keys(&database, config.access.cache_ttl, clock.clone());
        let generated_admin_key =
            keys.bootstrap(config.bootstrap_secret().as_ref()).await.context("creating the first API key")?;
        let executors = executors::executors(&config, clock.clone()).await?;
        let projects = Arc::new(ProjectService::new(executors.projects));
        let audit = Arc::new(AuditService::new(database.audit_log(), clock.clone()));
        let files = Arc::new(FileService::new(
            projects.clone(),
            executors.files,
            audit.clone(),
            config.executor.max_file_bytes,
        ));
        let terminals = Arc::new(TerminalService::new(
            database.terminal_tickets(),
            executors.terminals,
            projects.clone(),
            keys.clone(),
            audit.clone(),
            clock.clone(),
            TerminalLimits {
                idle_timeout: config.executor.terminal_idle_timeout,
                max_lifetime: config.executor.terminal_max_lifetime,
            },
        ));
        let wake = DispatchWake::default();
        let replica = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let parts = CommandParts {
            projects: projects.clone(),
            executor: executors.executor,
            audit: audit.clone(),
            deliveries: wake.clone(),
            clock: clock.clone(),
            replica: replica.clone(),
            keys: keys.watch().clone(),
        };
        let commands = subsystems::commands(&config, &database, parts);
        let webhooks = subsystems::webhooks(&config, &database, wake, clock.clone(), &replica)?;
        let rate_limits = subsystems::rate_limits(&config, &database, clock.clone());
        let idempotency = Arc::new(IdempotencyService::new(database.idempotency(), clock.clone()));

        let mut readiness: Vec<Arc<dyn HealthCheck>> =
            vec![Arc::new(database.clone()), Arc::new(crate::adapters::blocking_pool::BlockingPoolHealth)];
        readiness.extend(executors.health);
        let state = AppState::new(Services {
            keys: keys.clone(),
            projects,
            commands: commands.commands.clone(),
            queue: commands.queue.clone(),
            audit: audit.clone(),
            webhooks: webhooks.service,
            rate_limits: rate_limits.clone(),
            idempotency: idempotency.clone(),
            output: commands.output.clone(),
            sessions: commands.sessions.clone(),
            files,
            terminals: terminals.clone(),
            quotas: config.server.quotas(),
            client_ip: Arc::new(ClientIpResolver::new(config.server.trusted_proxies.clone())),
            mcp_allowed_origins: config
                .server
                .mcp_allowed_origins
                .iter()
                .map(|origin| origin.trim().to_owned())
                .collect(),
            readiness: readiness.into(),
            metrics: crate::telemetry::metrics::handle(),
            max_body_bytes: config.server.max_body_bytes,
            max_stdin_bytes: config.executor.max_stdin_bytes,
        });
        let upkeep = Upkeep {
            keys,
            rate_limits,
            queue: commands.store,
            recovery: commands.queue,
            deliveries: webhooks.deliveries,
            audit,
            idempotency,
            output: commands.output_log,
            sessions: commands.sessions,
            terminals,
            output_retention: config.queue.output_retention,
            webhook_retention: config.webhooks.retention,
            audit_retention: config.access.audit_retention,
            clock,
        };
        Ok(Self {
            listener,
            router: http::router(state),
            database,
            upkeep,
            commands: commands.commands,
            workers: commands.workers,
            dispatcher: webhooks.dispatcher,
            config,
            generated_admin_key,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves and runs the queue workers until `shutdown` completes; then stops accepting
    /// connections and claiming commands, and lets requests and commands in flight finish for up
    /// to `RDEV_SHUTDOWN_GRACE`. Commands run for requests that are still running then are
    /// killed and audited, and their requests answered; queued commands still running are
    /// killed with the process (their leases expire, and the replica that takes them back
    /// audits them). Audit entries kept while the database was down get a last try.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(false);
        let mut workers = tokio::task::JoinSet::new();
        for worker in self.workers {
            workers.spawn(worker.run(stopping_rx.clone()));
        }
        if let Some(dispatcher) = self.dispatcher {
            workers.spawn(dispatcher.run(stopping_rx.clone()));
        }
        let server = &self.config.server;
        let limits = http::server::Limits::fitted(
            server.max_connections,
            server.header_timeout,
            server.max_connections_per_ip,
            server.trusted_proxies.clone(),
        );
        let server = http::server::serve(self.listener, self.router, limits, async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections or claims, finishing what is in flight");
            let _ = stopping_tx.send(true);
        });
        let maintenance = tokio::spawn(self.upkeep.clone().run());
        let key_watch = tokio::spawn(self.upkeep.keys.watch().clone().run());
        let grace = self.config.server.shutdown_grace;
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
        tokio::pin!(drained);
        tokio::select! {
            result = &mut drained => result?,
            () = grace_expired => {
                tracing::warn!(?grace, "shutdown grace expired with work still running: stopping it");
                self.commands.stop_all(STOP_WAIT).await;
                // Their requests have answers now: a moment to send them.
                let _ = tokio::time::timeout(STOP_WAIT, &mut drained).await;
            }
        }
        maintenance.abort();
        key_watch.abort();
        // The last writes, bounded too: a database that hangs must not hold the exit.
        let last_writes = async {
            if let Err(error) = self.upkeep.keys.usage().flush().await {
                tracing::warn!(%error, "could not write API key usage at shutdown");
            }
            self.upkeep.audit.write_backlog().await;
            let unwritten = self.upkeep.audit.backlog_len();
            if unwritten > 0 {
                tracing::error!(unwritten, "audit entries lost at exit: the database stayed unavailable");
            }
            self.database.close().await;
        };
        if tokio::time::timeout(LAST_WRITES_WAIT, last_writes).await.is_err() {
            tracing::error!(?LAST_WRITES_WAIT, "the last writes at exit did not finish in time");
        }
        Ok(())
    }
}

/// How long the last writes at exit (key usage, kept audit entries) and closing the database
/// may take.
const LAST_WRITES_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
/// How long stopped commands get to be killed and audited, and their answers sent, at exit.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

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
