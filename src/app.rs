//! Wiring: the one place that picks adapters by configuration and hands them to services.

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::{
    adapters::{
        Database,
        local::{LocalExecutor, LocalProjects},
    },
    config::Config,
    domain::ApiKeySecret,
    http::{self, AppState},
    ports::{Clock, HealthCheck, SystemClock},
    services::{ApiKeyService, AuditService, CommandService, ProjectService},
};

/// A built server: listening, migrated, wired; `run_until_stopped` serves it.
pub struct App {
    listener: TcpListener,
    router: axum::Router,
    database: Database,
    config: Config,
    /// The admin key generated on first start, if this start generated one.
    pub generated_admin_key: Option<ApiKeySecret>,
}

impl App {
    /// Binds first (so `RDEV_LISTEN=…:0` works and the port is known), then connects, migrates,
    /// bootstraps the first key and wires the services.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        config.validate()?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {} (RDEV_LISTEN)", config.listen))?;
        let database = Database::connect(&config.database_url, config.db_max_connections).await?;
        database.migrate().await?;
        tracing::info!(database = database.kind(), "database ready");

        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let keys = Arc::new(ApiKeyService::new(database.api_keys(), clock.clone()));
        let generated_admin_key =
            keys.bootstrap(config.bootstrap_secret().as_ref()).await.context("creating the first API key")?;

        let local_projects = LocalProjects::new(&config.projects_dir);
        local_projects
            .ensure_exists()
            .await
            .with_context(|| format!("creating {} (RDEV_PROJECTS_DIR)", config.projects_dir.display()))?;
        let projects = Arc::new(ProjectService::new(Arc::new(local_projects)));
        let executor = Arc::new(LocalExecutor::new(&config.projects_dir, config.max_output_bytes));
        let audit = Arc::new(AuditService::new(database.audit_log(), clock.clone()));
        let commands = Arc::new(CommandService::new(projects.clone(), executor, audit.clone(), config.command_timeout));

        let readiness: Vec<Arc<dyn HealthCheck>> = vec![Arc::new(database.clone())];
        let state = AppState { keys, projects, commands, audit, readiness: readiness.into() };
        let router = http::router(state, config.max_body_bytes);
        Ok(Self { listener, router, database, config, generated_admin_key })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish for up to
    /// `RDEV_SHUTDOWN_GRACE` before closing the database.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let (stopping_tx, mut stopping_rx) = tokio::sync::watch::channel(false);
        let service = self.router.into_make_service_with_connect_info::<SocketAddr>();
        let server = axum::serve(self.listener, service).with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections, finishing requests in flight");
            let _ = stopping_tx.send(true);
        });
        let grace = self.config.shutdown_grace;
        let grace_expired = async move {
            let _ = stopping_rx.wait_for(|stopping| *stopping).await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            result = server => result.context("serving HTTP")?,
            () = grace_expired => tracing::warn!(?grace, "shutdown grace expired with requests still running"),
        }
        self.database.close().await;
        Ok(())
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = interrupt => {},
        () = terminate => {},
    }
}
