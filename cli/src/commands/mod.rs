//! One module per subcommand; `run` picks it.

mod cp;
mod lists;
mod login;
mod logs;
mod manage;
mod run;
mod shell;

use std::collections::BTreeMap;

use clap::CommandFactory;

use crate::{
    args::{Cli, Command},
    client::Client,
    config,
    error::{CliError, Result},
};

/// Runs the subcommand; the exit code to end with.
pub async fn run(cli: Cli) -> Result<u8> {
    let format = cli.output;
    match cli.command {
        Command::Login { url } => return login::login(url.or(cli.url)).await,
        Command::Logout => return login::logout(),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "rdev", &mut std::io::stdout());
            return Ok(0);
        }
        _ => {}
    }
    let client = Client::new(&config::resolve(cli.url.as_deref())?)?;
    match cli.command {
        Command::Projects => lists::projects(&client, format).await,
        Command::Ps(args) => lists::commands(&client, format, &args).await,
        Command::Audit(args) => lists::audit(&client, format, &args).await,
        Command::Run(args) => run::run(&client, &args).await,
        Command::Logs(args) => logs::logs(&client, &args).await,
        Command::Cancel { id } => manage::cancel(&client, &id).await,
        Command::Shell { project } => shell::shell(&client, &project).await,
        Command::Cp(args) => cp::cp(&client, &args).await,
        Command::Keys(keys) => manage::keys(&client, format, keys).await,
        Command::Sessions(sessions) => manage::sessions(&client, format, sessions).await,
        Command::Login { .. } | Command::Logout | Command::Completions { .. } => Ok(0),
    }
}

/// `NAME=VALUE` arguments as the API's `env` object.
fn parse_env(pairs: &[String]) -> Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
            _ => Err(CliError::Usage(format!("--env {pair:?}: expected NAME=VALUE"))),
        })
        .collect()
}

/// A path segment (a project or command id) safe inside a URL path.
fn segment(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
