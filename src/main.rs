//! The `rdev-api` binary: parse the command line, set up telemetry, run the chosen command.
//!
//! The runtime is built by hand rather than with `#[tokio::main]` so telemetry is set up before
//! it starts and flushed after it ends: the trace exporter blocks, which async code must not.

use std::process::ExitCode;

use rdev_api::cli::Cli;

/// How long blocking jobs still running at exit are waited for.
const RUNTIME_SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

fn main() -> ExitCode {
    // The process that starts local commands is this binary too; it needs nothing below.
    if std::env::args_os().nth(1).is_some_and(|arg| arg == rdev_api::adapters::local::sandbox::HELPER_ARG) {
        return rdev_api::adapters::local::sandbox::helper_main();
    }
    let cli = Cli::parse_args();
    rdev_api::install_crypto_provider();
    let telemetry =
        match rdev_api::telemetry::init(cli.config.telemetry.log_format, cli.config.telemetry.otlp_endpoint.as_deref())
        {
            Ok(telemetry) => telemetry,
            Err(error) => {
                eprintln!("rdev-api: {error:#}");
                return ExitCode::FAILURE;
            }
        };
    let result = tokio::runtime::Runtime::new().map_err(anyhow::Error::from).and_then(|runtime| {
        let result = runtime.block_on(rdev_api::cli::run(cli));
        // Dropping the runtime would wait for every blocking job; one stuck in the kernel must
        // not keep the process from ending.
        runtime.shutdown_timeout(RUNTIME_SHUTDOWN_WAIT);
        result
    });
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rdev-api: {error:#}");
            ExitCode::FAILURE
        }
    }
}
