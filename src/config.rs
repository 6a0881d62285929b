//! Every setting, in one struct: each is a flag and an environment variable (see `--help`),
//! checked at start so a bad value stops the server with a message naming it.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::bail;
use clap::{Args, ValueEnum};
use ipnet::IpNet;
use secrecy::{ExposeSecret as _, SecretString};

use crate::domain::{ApiKeySecret, Quotas, execution::MAX_COMMAND_BYTES, quota::MAX_QUOTA};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExecutorChoice {
    /// Projects are folders under RDEV_PROJECTS_DIR; commands run as local processes.
    Local,
    /// Projects are labelled pods in RDEV_NAMESPACE; commands run over pod exec.
    Kubernetes,
}

/// How the local executor confines commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SandboxMode {
    /// Namespaces, Landlock and no capabilities; the server does not start without them.
    Required,
    /// No confinement: commands see what the server's user sees. Only for kernels without
    /// Landlock or user namespaces, on a machine where every API key is trusted.
    Off,
}

/// `RDEV_SANDBOX_NETWORK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SandboxNetwork {
    /// A network namespace per project: its own loopback, nothing of the host's.
    None,
    /// The same, and outbound connections to public addresses only (through `pasta`, from
    /// the passt package): loopback, the host's addresses and private ranges stay unreachable.
    Public,
    /// The host's network: commands reach whatever the host reaches, its loopback included.
    Host,
}

/// `RDEV_SANDBOX_LIMITS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SandboxLimits {
    On,
    Off,
}

/// A size such as `512MiB`, `4GiB` or `1000000` (bytes).
fn parse_bytes(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|e| format!("not a size ({e}): use e.g. 512MiB or 4GiB"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Every setting, grouped as `--help` shows them.
#[derive(Clone, Debug, Args)]
pub struct Config {
    #[command(flatten)]
    pub server: ServerSettings,
    #[command(flatten)]
    pub database: DatabaseSettings,
    #[command(flatten)]
    pub executor: ExecutorSettings,
    #[command(flatten)]
    pub queue: QueueSettings,
    #[command(flatten)]
    pub webhooks: WebhookSettings,
    #[command(flatten)]
    pub access: AccessSettings,
    #[command(flatten)]
    pub telemetry: TelemetrySettings,
}

/// HTTP server.
#[derive(Clone, Debug, Args)]
#[command(next_help_heading = "HTTP server")]
pub struct ServerSettings {
    /// Address and port to serve HTTP on. Loopback only by default, as a fresh server holds a
    /// new admin key; the image and the manifests set 0.0.0.0:8080.
    #[arg(long, env = "RDEV_LISTEN", default_value = "127.0.0.1:8080", global = true)]
    pub listen: SocketAddr,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "RDEV_MAX_BODY_BYTES", default_value_t = 256 * 1024, global = true)]
    pub max_body_bytes: usize,

    /// How long running requests may take to finish after SIGTERM.
    #[arg(long, env = "RDEV_SHUTDOWN_GRACE", default_value = "25s", value_parser = humantime::parse_duration, global = true)]
    pub shutdown_grace: Duration,

    /// Comma-separated browser origins (`https://app.example.com`) allowed to call `/mcp`. A
    /// request with any other `Origin` is refused (403); clients other than browsers send none.
    #[arg(long, env = "RDEV_MCP_ALLOWED_ORIGINS", value_delimiter = ',', global = true)]
    pub mcp_allowed_origins: Vec<String>,

    /// Comma-separated CIDRs of reverse proxies whose `X-Forwarded-For` is believed.
    #[arg(long, env = "RDEV_TRUSTED_PROXIES", value_delimiter = ',', global = true)]
    pub trusted_proxies: Vec<IpNet>,

    /// Most TCP connections open at once; more are served for /health and /ready only. Lowered
    /// at start to what the process's file limit leaves room for.
    #[arg(long, env = "RDEV_MAX_CONNECTIONS", default_value_t = 4096, global = true)]
    pub max_connections: usize,

    /// How long a client may take to send a request's headers; also how long a connection may
    /// stay with no request in flight, and the longest gap in a request body (then 408).
    #[arg(long, env = "RDEV_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration, global = true)]
    pub header_timeout: Duration,

    /// Connections one client address may hold open at once (trusted proxies excepted); past
    /// it a new one is closed when accepted.
    #[arg(long, env = "RDEV_MAX_CONNECTIONS_PER_IP", default_value_t = 256, global = true)]
    pub max_connections_per_ip: usize,

    /// Followers of command output (`/commands/{id}/events`) at once on this replica; past it 429.
    #[arg(long, env = "RDEV_MAX_FOLLOWERS", default_value_t = 2000, global = true)]
    pub max_followers: usize,

    /// Followers at once of one API key on this replica, unless the key sets its own
    /// (`quotas.followers`); past it 429 QUOTA_EXCEEDED.
    #[arg(long, env = "RDEV_MAX_FOLLOWERS_PER_KEY", default_value_t = 100, global = true)]
    pub max_followers_per_key: u32,

    /// Terminals one API key may have open at once on this replica (each is a pty of the host),
    /// unless the key sets its own (`quotas.terminals`); past it 429 QUOTA_EXCEEDED.
    #[arg(long, env = "RDEV_MAX_TERMINALS_PER_KEY", default_value_t = 16, global = true)]
    pub max_terminals_per_key: u32,

    /// Live sessions of one API key, on every replica together, unless the key sets its own
    /// (`quotas.sessions`); past it 429 QUOTA_EXCEEDED.
    #[arg(long, env = "RDEV_MAX_SESSIONS_PER_KEY", default_value_t = 100, global = true)]
    pub max_sessions_per_key: u32,

    /// Commands of one API key queued or running at once, unless the key sets its own
    /// (`quotas.commands`); past it 429 QUOTA_EXCEEDED.
    #[arg(long, env = "RDEV_MAX_COMMANDS_PER_KEY", default_value_t = 1000, global = true)]
    pub max_commands_per_key: u32,
}

impl ServerSettings {
    /// The quotas of a key that sets none of its own.
    pub fn quotas(&self) -> Quotas {
        Quotas {
            terminals: self.max_terminals_per_key,
            sessions: self.max_sessions_per_key,
            commands: self.max_commands_per_key,
            followers: self.max_followers_per_key,
        }
    }
}

/// Database.
#[derive(Clone, Debug, Args)]
#[command(next_help_heading = "Database")]
pub struct DatabaseSettings {
    /// `sqlite://FILE` (created if missing) or `postgres://…`.
    #[arg(
        id = "database_url",
        long = "database-url",
        env = "DATABASE_URL",
        default_value = "sqlite://rdev.db",
        global = true,
        hide_env_values = true
    )]
    pub url: SecretString,

    /// Upper bound of the Postgres connection pool (SQLite always uses one connection).
    #[arg(
        id = "db_max_connections",
        long = "db-max-connections",
        env = "RDEV_DB_MAX_CONNECTIONS",
        default_value_t = 10,
        global = true
    )]
    pub max_connections: u32,
}

/// Projects and commands.
#[derive(Clone, Debug, Args)]
#[command(next_help_heading = "Projects and commands")]
pub struct ExecutorSettings {
    /// Where projects live and commands run.
    #[arg(
        id = "executor",
        long = "executor",
        env = "RDEV_EXECUTOR",
        value_enum,
        default_value = "local",
        global = true
    )]
    pub kind: ExecutorChoice,

    /// The local executor's projects: each folder directly inside is one project.
    #[arg(long, env = "RDEV_PROJECTS_DIR", default_value = "./projects", global = true)]
    pub projects_dir: PathBuf,

    /// How the local executor confines commands: `required` (each command in its own PID and
    /// mount namespaces under Landlock, without capabilities; no start without them) or `off`.
    #[arg(long, env = "RDEV_SANDBOX", value_enum, default_value = "required", global = true)]
    pub sandbox: SandboxMode,

    /// Comma-separated folders confined commands may also read and execute, besides the system
    /// folders (e.g. a toolchain under /root/.cargo).
    #[arg(long, env = "RDEV_SANDBOX_READ_PATHS", value_delimiter = ',', global = true)]
    pub sandbox_read_paths: Vec<PathBuf>,

    /// Network of confined commands: `none` (a network namespace per project with only its own
    /// loopback), `public` (the same, and outbound to public addresses only, through pasta) or
    /// `host` (the host's network, loopback and all).
    #[arg(long, env = "RDEV_SANDBOX_NETWORK", value_enum, default_value = "none", global = true)]
    pub sandbox_network: SandboxNetwork,

    /// Per-command limits (memory, processes, CPU) from cgroups: `on` (no start where no cgroup
    /// is writable) or `off`.
    #[arg(long, env = "RDEV_SANDBOX_LIMITS", value_enum, default_value = "on", global = true)]
    pub sandbox_limits: SandboxLimits,

    /// Memory one command may use, page cache and its /tmp and /dev/shm included (e.g. 4GiB).
    #[arg(long, env = "RDEV_SANDBOX_MEMORY", default_value = "4GiB", value_parser = parse_bytes, global = true)]
    pub sandbox_memory: u64,

    /// Processes and threads one command may have at once.
    #[arg(long, env = "RDEV_SANDBOX_PIDS", default_value_t = 1024, global = true)]
    pub sandbox_pids: u64,

    /// CPUs one command may use (e.g. 1.5); all of them when unset.
    #[arg(long, env = "RDEV_SANDBOX_CPUS", global = true)]
    pub sandbox_cpus: Option<f64>,

    /// Size of each command's private /tmp, and of its /dev/shm (inodes bounded with it).
    #[arg(long, env = "RDEV_SANDBOX_TMP_SIZE", default_value = "512MiB", value_parser = parse_bytes, global = true)]
    pub sandbox_tmp_size: u64,

    /// The host uid and gid commands run as when the server runs as root: one no host user has.
    #[arg(long, env = "RDEV_SANDBOX_UID", default_value_t = 2_000_000_000, global = true)]
    pub sandbox_uid: u32,

    /// The `rdev-api` binary that starts commands (as `rdev-api __sandbox-helper`); this one
    /// when unset.
    #[arg(long, env = "RDEV_SANDBOX_HELPER", global = true)]
    pub sandbox_helper: Option<PathBuf>,

    /// The Kubernetes executor's namespace: projects are pods there.
    #[arg(long, env = "RDEV_NAMESPACE", default_value = "rdev", global = true)]
    pub namespace: String,

    /// A kubeconfig file for the Kubernetes executor; without it, the in-cluster service account
    /// (or `~/.kube/config`).
    #[arg(long, env = "KUBECONFIG", global = true)]
    pub kubeconfig: Option<PathBuf>,

    /// How long a Kubernetes API call (not a running command) may take before it counts as failed.
    #[arg(long, env = "RDEV_KUBE_API_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration, global = true)]
    pub kube_api_timeout: Duration,

    /// Consecutive Kubernetes infrastructure failures that open the circuit breaker.
    #[arg(long, env = "RDEV_BREAKER_FAILURES", default_value_t = 5, global = true)]
    pub breaker_failures: u32,

    /// How long the open circuit refuses calls before one probe may try again.
    #[arg(long, env = "RDEV_BREAKER_COOLDOWN", default_value = "30s", value_parser = humantime::parse_duration, global = true)]
    pub breaker_cooldown: Duration,

    /// Default time limit of a command (1s to 1h), e.g. `60s`, `5m`.
    #[arg(long, env = "RDEV_COMMAND_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration, global = true)]
    pub command_timeout: Duration,

    /// Cap on each of stdout and stderr kept per command, in bytes: past it the first and last
    /// half are kept. Also the most a request's `max_output_bytes` may ask for.
    #[arg(long, env = "RDEV_MAX_OUTPUT_BYTES", default_value_t = 1024 * 1024, global = true)]
    pub max_output_bytes: usize,

    /// The most a command's stdin (`stdin`, or `stdin_base64` decoded) may hold, in bytes. The
    /// body limit of the routes that run commands grows by twice this, to leave room for it.
    #[arg(long, env = "RDEV_MAX_STDIN_BYTES", default_value_t = 1024 * 1024, global = true)]
    pub max_stdin_bytes: usize,

    /// The largest file `PUT /projects/{id}/files/content` takes, in bytes (413 past it).
    #[arg(long, env = "RDEV_MAX_FILE_BYTES", default_value_t = 100 * 1024 * 1024, global = true)]
    pub max_file_bytes: u64,

    /// File system jobs (a chunk read or written, a folder page, a slice of a deletion) the file
    /// API runs at once; more wait their turn. Lookups of projects never wait on them.
    #[arg(long, env = "RDEV_FILE_WORKERS", default_value_t = 16, global = true)]
    pub file_workers: usize,

    /// The largest file whose ETag is the sha256 of its content (computed once per version);
    /// a larger file's ETag is a digest of its inode, size and times (e.g. 64MiB).
    #[arg(long, env = "RDEV_ETAG_HASH_MAX", default_value = "64MiB", value_parser = parse_bytes, global = true)]
    pub etag_hash_max: u64,

    /// How long a session lives without a command; then it is gone (404) and purged.
    #[arg(long, env = "RDEV_SESSION_IDLE_TIMEOUT", default_value = "1h", value_parser = humantime::parse_duration, global = true)]
    pub session_idle_timeout: Duration,

    /// How long a terminal may see nothing either way (no keystroke, no output); then it ends.
    #[arg(long, env = "RDEV_TERMINAL_IDLE_TIMEOUT", default_value = "15m", value_parser = humantime::parse_duration, global = true)]
    pub terminal_idle_timeout: Duration,

    /// How long a terminal may live, however busy; then it ends with an exit frame.
    #[arg(long, env = "RDEV_TERMINAL_MAX_LIFETIME", default_value = "12h", value_parser = humantime::parse_duration, global = true)]
    pub terminal_max_lifetime: Duration,
}

/// Command queue.
#[derive(Clone, Debug, Args)]
#[command(next_help_heading = "Command queue")]
pub struct QueueSettings {
    /// Queue workers per replica: how many queued commands this replica runs at once (0: none).
    #[arg(
        id = "queue_workers",
        long = "queue-workers",
        env = "RDEV_QUEUE_WORKERS",
        default_value_t = 4,
        global = true
    )]
    pub workers: u32,

    /// How long a worker's claim on a queued command lasts without renewal. A replica that dies
    /// loses its commands to the others after this long.
    #[arg(id = "queue_lease", long = "queue-lease", env = "RDEV_QUEUE_LEASE", default_value = "30s", value_parser = humantime::parse_duration, global = true)]
    pub lease: Duration,

    /// How long a command's output log is kept after it finished; older ones are deleted
    /// hourly. At least `1h`.
    #[arg(long, env = "RDEV_OUTPUT_RETENTION", default_value = "7days", value_parser = humantime::parse_duration, global = true)]
    pub output_retention: Duration,
}

/// Webhooks.
#[derive(Clone, Debug, Args)]
#[command(next_help_heading = "Webhooks")]
pub struct WebhookSettings {
    /// Webhook attempts in flight at once on this replica (0: this replica sends none; the
    /// others, or a restart, deliver what is pending).
    #[arg(
        id = "webhook_workers",
        long = "webhook-workers",
        env = "RDEV_WEBHOOK_WORKERS",
        default_value_t = 4,
        global = true
    )]
    pub workers: u32,

    /// The waits between webhook attempts, comma-separated; one attempt more than waits is made.
    /// Each wait varies by up to ±20% at random.
    #[arg(
        long = "webhook-retry-schedule",
        env = "RDEV_WEBHOOK_RETRY_SCHEDULE",
        default_value = "5s,5m,30m,2h,5h,10h",
        value_delimiter = ',',
        value_parser = humantime::parse_duration,
        global = true
    )]
    pub retry_schedule: Vec<Duration>,

    /// How long one webhook attempt may take, connection to last byte.
    #[arg(id = "webhook_timeout", long = "webhook-timeout", env = "RDEV_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration, global = true)]
    pub timeout: Duration,

    /// How long finished webhook deliveries (with their attempts) are kept; pending ones stay
    /// until they finish.
    #[arg(id = "webhook_retention", long = "webhook-retention", env = "RDEV_WEBHOOK_RETENTION", default_value = "30days", value_parser = humantime::parse_duration, global = true)]
    pub retention: Duration,

    /// Allow webhooks to loopback, private, link-local and other non-public addresses. Off by
    /// default, so a webhook cannot reach the cluster's own network or a metadata endpoint.
    #[arg(
        id = "webhook_allow_private",
        long = "webhook-allow-private",
        env = "RDEV_WEBHOOK_ALLOW_PRIVATE",
        default_value_t = false,
        global = true
    )]
    pub allow_private: bool,
}

/// API keys, rate limits and audit.
#[derive(Clone, Debug, Args)]
#[command(next_help_heading = "API keys, rate limits and audit")]
pub struct AccessSettings {
    /// An API key secret (`rdev_…`) to store as an admin key at start, instead of generating one.
    #[arg(long, env = "RDEV_BOOTSTRAP_API_KEY", hide_env_values = true, global = true)]
    pub bootstrap_api_key: Option<SecretString>,

    /// How long API key lookups are cached. A revoked key stops working on every replica within
    /// this time. E.g. `30s`, `5s`. Kubernetes projects come from a pod watch and are not cached;
    /// local project folders are re-read after at most 1s (or this, if shorter).
    #[arg(long, env = "CACHE_TTL", default_value = "30s", value_parser = humantime::parse_duration, global = true)]
    pub cache_ttl: Duration,

    /// Requests per minute per API key, for keys without a limit of their own. Counted where
    /// RDEV_RATE_LIMIT_STORE says: by default in the database on Postgres (shared by all
    /// replicas), in this process's memory on SQLite (one replica).
    #[arg(long, env = "RDEV_RATE_LIMIT_PER_MINUTE", default_value_t = 600, global = true)]
    pub rate_limit_per_minute: u32,

    /// When the database cannot count a request: `false` (default) answers 503, `true` lets it
    /// through unlimited.
    #[arg(long, env = "RDEV_RATE_LIMIT_FAIL_OPEN", default_value_t = false, global = true)]
    pub rate_limit_fail_open: bool,

    /// Where rate-limit counts live: `database` (shared by every replica), `memory` (this
    /// process only) or `auto`: memory on SQLite, which has one host, the database on Postgres.
    #[arg(long, env = "RDEV_RATE_LIMIT_STORE", value_enum, default_value = "auto", global = true)]
    pub rate_limit_store: RateLimitStore,

    /// How long audit entries are kept; older ones are deleted hourly. At least `1h`.
    #[arg(long, env = "RDEV_AUDIT_RETENTION", default_value = "90days", value_parser = humantime::parse_duration, global = true)]
    pub audit_retention: Duration,
}

/// Logs and traces.
#[derive(Clone, Debug, Args)]
#[command(next_help_heading = "Logs and traces")]
pub struct TelemetrySettings {
    /// OTLP/HTTP collector base URL (e.g. `http://otel-collector:4318`); traces are exported to
    /// `<url>/v1/traces` only when this is set.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", global = true)]
    pub otlp_endpoint: Option<String>,

    /// Log line format.
    #[arg(long, env = "RDEV_LOG_FORMAT", value_enum, default_value = "text", global = true)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RateLimitStore {
    Auto,
    Database,
    Memory,
}

/// Room for the largest command plus JSON framing and some environment variables.
const MIN_BODY_BYTES: usize = MAX_COMMAND_BYTES * 2;
const MAX_OUTPUT_CAP: usize = 64 * 1024 * 1024;
const MAX_STDIN_CAP: usize = 64 * 1024 * 1024;

impl Config {
    /// The checks clap's parsers cannot express; each message names the variable to fix.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&self.executor.command_timeout) {
            bail!("RDEV_COMMAND_TIMEOUT must be between 1s and 1h, got {:?}", self.executor.command_timeout);
        }
        if !(1..=MAX_OUTPUT_CAP).contains(&self.executor.max_output_bytes) {
            bail!(
                "RDEV_MAX_OUTPUT_BYTES must be between 1 and {MAX_OUTPUT_CAP}, got {}",
                self.executor.max_output_bytes
            );
        }
        if self.executor.max_stdin_bytes > MAX_STDIN_CAP {
            bail!("RDEV_MAX_STDIN_BYTES must be at most {MAX_STDIN_CAP}, got {}", self.executor.max_stdin_bytes);
        }
        if self.executor.session_idle_timeout < Duration::from_secs(1) {
            bail!("RDEV_SESSION_IDLE_TIMEOUT must be at least 1s, got {:?}", self.executor.session_idle_timeout);
        }
        if self.executor.terminal_max_lifetime < Duration::from_secs(1) {
            bail!("RDEV_TERMINAL_MAX_LIFETIME must be at least 1s, got {:?}", self.executor.terminal_max_lifetime);
        }
        if self.executor.terminal_idle_timeout < Duration::from_secs(1) {
            bail!("RDEV_TERMINAL_IDLE_TIMEOUT must be at least 1s, got {:?}", self.executor.terminal_idle_timeout);
        }
        if self.executor.file_workers == 0 || self.executor.file_workers > 256 {
            bail!("RDEV_FILE_WORKERS must be between 1 and 256, got {}", self.executor.file_workers);
        }
        if self.executor.sandbox_memory < 16 << 20 {
            bail!("RDEV_SANDBOX_MEMORY must be at least 16MiB, got {}", self.executor.sandbox_memory);
        }
        if self.executor.sandbox_pids < 8 {
            bail!("RDEV_SANDBOX_PIDS must be at least 8, got {}", self.executor.sandbox_pids);
        }
        if self.executor.sandbox_cpus.is_some_and(|cpus| !(0.01..=4096.0).contains(&cpus)) {
            bail!("RDEV_SANDBOX_CPUS must be between 0.01 and 4096, got {:?}", self.executor.sandbox_cpus);
        }
        if self.executor.sandbox_tmp_size < 1 << 20 {
            bail!("RDEV_SANDBOX_TMP_SIZE must be at least 1MiB, got {}", self.executor.sandbox_tmp_size);
        }
        if matches!(self.executor.sandbox_uid, 0 | u32::MAX) {
            bail!("RDEV_SANDBOX_UID must be an unprivileged id, got {}", self.executor.sandbox_uid);
        }
        if self.server.max_body_bytes < MIN_BODY_BYTES {
            bail!("RDEV_MAX_BODY_BYTES must be at least {MIN_BODY_BYTES}, got {}", self.server.max_body_bytes);
        }
        if !(1..=1_000_000).contains(&self.access.rate_limit_per_minute) {
            bail!(
                "RDEV_RATE_LIMIT_PER_MINUTE must be between 1 and 1000000, got {}",
                self.access.rate_limit_per_minute
            );
        }
        if self.access.cache_ttl > Duration::from_secs(3600) {
            bail!(
                "CACHE_TTL must be at most 1h (it bounds how long a revoked key keeps working), got {:?}",
                self.access.cache_ttl
            );
        }
        if !(16..=1_000_000).contains(&self.server.max_connections) {
            bail!("RDEV_MAX_CONNECTIONS must be between 16 and 1000000, got {}", self.server.max_connections);
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(600)).contains(&self.server.header_timeout) {
            bail!("RDEV_HEADER_TIMEOUT must be between 100ms and 10m, got {:?}", self.server.header_timeout);
        }
        if self.server.max_connections_per_ip == 0 {
            bail!("RDEV_MAX_CONNECTIONS_PER_IP must be at least 1");
        }
        if self.server.max_followers == 0 {
            bail!("RDEV_MAX_FOLLOWERS must be at least 1");
        }
        let quotas = [
            ("RDEV_MAX_FOLLOWERS_PER_KEY", self.server.max_followers_per_key),
            ("RDEV_MAX_TERMINALS_PER_KEY", self.server.max_terminals_per_key),
            ("RDEV_MAX_SESSIONS_PER_KEY", self.server.max_sessions_per_key),
            ("RDEV_MAX_COMMANDS_PER_KEY", self.server.max_commands_per_key),
        ];
        for (setting, value) in quotas {
            if !(1..=MAX_QUOTA).contains(&value) {
                bail!("{setting} must be between 1 and {MAX_QUOTA}, got {value}");
            }
        }
        if !(1..=1000).contains(&self.database.max_connections) {
            bail!("RDEV_DB_MAX_CONNECTIONS must be between 1 and 1000, got {}", self.database.max_connections);
        }
        if let Some(raw) = &self.access.bootstrap_api_key
            && ApiKeySecret::parse(raw.expose_secret()).is_err()
        {
            bail!("RDEV_BOOTSTRAP_API_KEY is not a valid rdev API key; generate one with `rdev-api keys generate`");
        }
        if self.queue.workers > 256 {
            bail!("RDEV_QUEUE_WORKERS must be at most 256, got {}", self.queue.workers);
        }
        if self.queue.lease < Duration::from_secs(1) {
            bail!("RDEV_QUEUE_LEASE must be at least 1s, got {:?}", self.queue.lease);
        }
        if self.webhooks.workers > 256 {
            bail!("RDEV_WEBHOOK_WORKERS must be at most 256, got {}", self.webhooks.workers);
        }
        if self.webhooks.retry_schedule.len() > 20 {
            bail!("RDEV_WEBHOOK_RETRY_SCHEDULE may list at most 20 waits, got {}", self.webhooks.retry_schedule.len());
        }
        if self.webhooks.retry_schedule.iter().any(|wait| *wait > Duration::from_secs(7 * 24 * 3600)) {
            bail!("RDEV_WEBHOOK_RETRY_SCHEDULE waits must be at most 7 days each");
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(300)).contains(&self.webhooks.timeout) {
            bail!("RDEV_WEBHOOK_TIMEOUT must be between 100ms and 5m, got {:?}", self.webhooks.timeout);
        }
        if self.access.audit_retention < Duration::from_secs(3600) {
            bail!("RDEV_AUDIT_RETENTION must be at least 1h, got {:?}", self.access.audit_retention);
        }
        if self.queue.output_retention < Duration::from_secs(3600) {
            bail!("RDEV_OUTPUT_RETENTION must be at least 1h, got {:?}", self.queue.output_retention);
        }
        if self.webhooks.retention < Duration::from_secs(3600) {
            bail!("RDEV_WEBHOOK_RETENTION must be at least 1h, got {:?}", self.webhooks.retention);
        }
        if self.executor.breaker_failures == 0 {
            bail!("RDEV_BREAKER_FAILURES must be at least 1");
        }
        if self.executor.kube_api_timeout.is_zero() {
            bail!("RDEV_KUBE_API_TIMEOUT must be more than 0");
        }
        if crate::domain::ProjectId::parse(&self.executor.namespace).is_err() {
            bail!("RDEV_NAMESPACE must be a Kubernetes namespace name, got {:?}", self.executor.namespace);
        }
        Ok(())
    }

    pub fn bootstrap_secret(&self) -> Option<ApiKeySecret> {
        self.access.bootstrap_api_key.as_ref().and_then(|raw| ApiKeySecret::parse(raw.expose_secret()).ok())
    }
}
