//! The `rdev-api` binary: parse the command line, set up logging, run the chosen command.

use std::process::ExitCode;

use clap::Parser as _;
use rdev_api::cli::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    rdev_api::telemetry::init(cli.config.log_format);
    match rdev_api::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rdev-api: {error:#}");
            ExitCode::FAILURE
        }
    }
}
