//! The command line: `rdev-api [serve]`, `rdev-api migrate`, `rdev-api keys create`.

use std::{sync::Arc, time::Duration};

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use secrecy::ExposeSecret as _;

use crate::{
    adapters::Database,
    app::{App, shutdown_signal, subsystems},
    config::Config,
    domain::{ApiKeySecret, NewApiKey, Scope},
    ports::{Clock, SystemClock},
};

#[derive(Debug, Parser)]
#[command(name = "rdev-api", version, about = "Run shell commands in development environments over HTTP")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

impl Cli {
    /// The command line, parsed. The server's settings are global, so `rdev-api serve --listen …`
    /// works; `migrate` and `keys` need only the database, so their help shows only that.
    pub fn parse_args() -> Self {
        let mut command = Self::command();
        command.build();
        let command = command.mut_subcommand("migrate", only_database_help).mut_subcommand("keys", |keys| {
            only_database_help(keys)
                .mut_subcommand("create", only_database_help)
                .mut_subcommand("generate", only_database_help)
        });
        Self::from_arg_matches(&command.get_matches()).unwrap_or_else(|error| error.exit())
    }
}

/// Hides the server's settings in `command`'s help, but for the database's (they still parse).
/// In place: the command is built, and its index of flags points at the arguments' positions.
fn only_database_help(command: clap::Command) -> clap::Command {
    command.mut_args(|arg| {
        let server_setting = arg.is_global_set() && arg.get_id() != "database_url";
        if server_setting { arg.hide(true) } else { arg }
    })
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (what `rdev-api` alone does).
    Serve,
    /// Apply the database migrations embedded in this binary, then exit.
    Migrate,
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key and print its secret (shown this once).
    Create {
        /// What the key is for, shown in listings and the audit log, e.g. `ci`.
        #[arg(long)]
        name: String,
        /// Comma-separated, e.g. `projects:read,commands:execute`, or `admin`.
        #[arg(long)]
        scopes: String,
        /// Lifetime, e.g. `30d`; without it the key does not expire.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<Duration>,
    },
    /// Print a new random secret without storing it, e.g. for RDEV_BOOTSTRAP_API_KEY.
    Generate,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.config).await,
        Command::Migrate => {
            let database = Database::connect(cli.config.database.url.expose_secret(), 1).await?;
            database.migrate().await?;
            println!("migrations applied ({})", database.kind());
            Ok(())
        }
        Command::Keys(KeysCommand::Create { name, scopes, expires_in }) => {
            create_key(&cli.config, name, &scopes, expires_in).await
        }
        Command::Keys(KeysCommand::Generate) => {
            println!("{}", ApiKeySecret::generate().expose());
            Ok(())
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let app = App::build(config).await?;
    let shutdown = shutdown_signal()?;
    let addr = app.local_addr()?;
    if let Some(secret) = &app.generated_admin_key {
        announce_admin_key(secret, addr.port());
    }
    tracing::info!(%addr, "listening");
    app.run_until_stopped(shutdown).await
}

/// Shown once, on stderr, so it stays out of log collectors reading stdout.
fn announce_admin_key(secret: &ApiKeySecret, port: u16) {
    eprintln!(
        "\nrdev-api created an admin API key. It is shown only this once; keep it somewhere safe:\n\n    {key}\n\nTry it:\n    curl -H \"X-API-Key: {key}\" localhost:{port}/projects\n",
        key = secret.expose()
    );
}

async fn create_key(config: &Config, name: String, scopes: &str, expires_in: Option<Duration>) -> anyhow::Result<()> {
    let scopes = Scope::parse_list(scopes)?;
    let database = Database::connect(config.database.url.expose_secret(), 1).await?;
    database.migrate().await?;
    let clock = Arc::new(SystemClock);
    let expires_at = expires_in.map(|d| chrono::Duration::from_std(d).map(|d| clock.now() + d)).transpose()?;
    let service = subsystems::keys(&database, config.access.cache_ttl, clock);
    let (key, secret) = service
        .create(
            None,
            NewApiKey {
                name,
                scopes,
                expires_at,
                allowed_ips: vec![],
                rate_limit_per_minute: None,
                quotas: Default::default(),
            },
        )
        .await?;
    eprintln!("created API key {} ({}); its secret is shown only this once:", key.id, key.name);
    println!("{}", secret.expose());
    database.close().await;
    Ok(())
}
