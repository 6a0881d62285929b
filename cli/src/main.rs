//! `rdev`: a command-line client of rdev-api for people at a terminal: run and follow commands,
//! open a terminal, copy files, list what a key may see.

mod args;
mod client;
mod commands;
mod config;
mod error;
mod exit;
mod output;
mod sse;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = args::Cli::parse();
    // One thread is enough for one person's requests, and keeps the client small.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("rdev: cannot start: {error}");
            return ExitCode::from(exit::ERROR);
        }
    };
    let result = runtime.block_on(commands::run(cli));
    // A blocked read of stdin (the terminal's) must not keep the process alive.
    runtime.shutdown_background();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("rdev: {error}");
            ExitCode::from(exit::ERROR)
        }
    }
}
