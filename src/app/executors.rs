//! The executor subsystem: where projects come from and where commands run, as the
//! configuration asks (local folders in the sandbox, or pods behind the circuit breaker).

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use secrecy::ExposeSecret as _;

use crate::{
    adapters::{
        Database,
        breaker::{BreakerExecutor, CircuitBreaker},
        cache::CachedProjectSource,
        kube::{KubeClients, KubeExecutor, KubeFiles, KubeTerminals, WatchHealth, WatchedProjects},
        local::{
            FileLimits, LocalExecutor, LocalFiles, LocalProjects, SandboxHealth,
            sandbox::{self, Sandbox, ServerFiles},
        },
    },
    config::{Config, ExecutorChoice, SandboxLimits, SandboxMode, SandboxNetwork},
    ports::{Clock, Executor, HealthCheck, ProjectFiles, ProjectSource, TerminalHost},
};

/// How long a local projects folder listing (or lookup) is reused: at most `CACHE_TTL`.
const LOCAL_PROJECTS_FRESHNESS: Duration = Duration::from_secs(1);

/// The project source, the executor, and the executor's readiness check.
pub(super) struct Executors {
    pub projects: Arc<dyn ProjectSource>,
    pub executor: Arc<dyn Executor>,
    /// The executor's readiness checks (and, on Kubernetes, the pod watch's).
    pub health: Vec<Arc<dyn HealthCheck>>,
    /// The projects' files, where the executor keeps them.
    pub files: Arc<dyn ProjectFiles>,
    /// Where interactive terminals run.
    pub terminals: Arc<dyn TerminalHost>,
}

/// The project source and executor the configuration asks for, and their readiness checks.
/// Kubernetes: projects from a watch of the pods (memory, no API call per request), exec behind
/// the circuit breaker.
pub(super) async fn executors(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Executors> {
    match config.executor.kind {
        ExecutorChoice::Local => {
            let projects = LocalProjects::new(&config.executor.projects_dir);
            projects
                .ensure_exists()
                .await
                .with_context(|| format!("creating {} (RDEV_PROJECTS_DIR)", config.executor.projects_dir.display()))?;
            let sandbox = Arc::new(start_sandbox(config).await?);
            let root = sandbox.projects_root().to_path_buf();
            let limits = FileLimits { workers: config.executor.file_workers, hash_max: config.executor.etag_hash_max };
            let files =
                Arc::new(LocalFiles::new(root.clone(), limits).context("could not make the files' scratch folder")?);
            let executor = Arc::new(LocalExecutor::new(root, sandbox.clone()));
            // Reading the folder costs a trip to the blocking pool per lookup, which dominates
            // a `GET /projects`; a second of staleness is invisible to someone creating folders.
            let freshness = config.access.cache_ttl.min(LOCAL_PROJECTS_FRESHNESS);
            let projects = CachedProjectSource::new(Arc::new(projects), freshness, clock);
            Ok(Executors {
                projects: Arc::new(projects),
                executor: executor.clone(),
                health: vec![Arc::new(SandboxHealth(sandbox))],
                files,
                terminals: executor,
            })
        }
        ExecutorChoice::Kubernetes => {
            let clients =
                KubeClients::connect(config.executor.kubeconfig.as_deref(), config.executor.kube_api_timeout).await?;
            let breaker = Arc::new(CircuitBreaker::new(
                "kubernetes",
                config.executor.breaker_failures,
                config.executor.breaker_cooldown,
                clock.clone(),
            ));
            // Served from a watch: no API call per request, and the breaker only guards exec.
            let projects = WatchedProjects::start(clients.api, &config.executor.namespace);
            let files = Arc::new(KubeFiles::new(
                clients.exec.clone(),
                &config.executor.namespace,
                config.executor.kube_api_timeout,
            ));
            let terminals = Arc::new(KubeTerminals::new(
                clients.exec.clone(),
                &config.executor.namespace,
                config.executor.kube_api_timeout,
            ));
            let exec = KubeExecutor::new(clients.exec, &config.executor.namespace, config.executor.kube_api_timeout);
            let executor = BreakerExecutor { breaker: breaker.clone(), inner: exec };
            tracing::info!(namespace = %config.executor.namespace, "using the Kubernetes executor");
            let health: Vec<Arc<dyn HealthCheck>> = vec![breaker, Arc::new(WatchHealth(projects.clone()))];
            Ok(Executors { projects, executor: Arc::new(executor), health, files, terminals })
        }
    }
}

/// The helper that starts local commands, confined as `RDEV_SANDBOX` asks. From here on no
/// other process of this user may read the server's memory or `/proc` entries either.
async fn start_sandbox(config: &Config) -> anyhow::Result<Sandbox> {
    let files = ServerFiles {
        database_file: Database::sqlite_file(config.database.url.expose_secret()),
        database_socket_dir: Database::socket_dir(config.database.url.expose_secret()),
    };
    let confine = config.executor.sandbox == SandboxMode::Required;
    let (mut helper, warnings) =
        sandbox::helper_config(&config.executor.projects_dir, confine, &config.executor.sandbox_read_paths, &files)
            .context("deciding what commands may read (RDEV_SANDBOX)")?;
    let settings = &config.executor;
    helper.network = match settings.sandbox_network {
        SandboxNetwork::None => sandbox::Network::None,
        SandboxNetwork::Public => sandbox::Network::Public,
        SandboxNetwork::Host => sandbox::Network::Host,
    };
    helper.limits = (settings.sandbox_limits == SandboxLimits::On).then(|| sandbox::Limits {
        memory_bytes: settings.sandbox_memory,
        pids: settings.sandbox_pids,
        cpu_millis: settings.sandbox_cpus.map(|cpus| (cpus * 1000.0).round() as u64),
    });
    helper.tmp_bytes = settings.sandbox_tmp_size;
    helper.uid = settings.sandbox_uid;
    warnings.iter().for_each(|warning| tracing::warn!("{warning}"));
    let program = match &config.executor.sandbox_helper {
        Some(program) => program.clone(),
        None => std::env::current_exe().context("finding this binary, which starts commands")?,
    };
    let sandbox = Sandbox::start(program, helper).await.context("starting the sandbox helper (RDEV_SANDBOX)")?;
    let capabilities = sandbox.capabilities();
    if capabilities.confined {
        tracing::info!(
            landlock_abi = capabilities.landlock_abi,
            user_namespace = capabilities.user_namespace,
            limits = capabilities.limits.as_deref().unwrap_or("off"),
            network = ?settings.sandbox_network,
            "commands run confined"
        );
    } else {
        tracing::warn!("RDEV_SANDBOX=off: commands run unconfined and can read whatever this server's user can");
    }
    nix::sys::prctl::set_dumpable(false).context("making this process's memory unreadable to others")?;
    Ok(sandbox)
}
