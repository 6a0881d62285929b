//! Commands of the local executor run confined, started by a helper process rather than by the
//! server itself: they cannot read or change anything of the server's (its environment,
//! memory, database, other projects), and nothing they start outlives them.
//!
//! # Layout
//! - `protocol`: the frames between the server and the helper.
//! - `client`: the server's side (`Sandbox`), async.
//! - `helper`: the helper process (`rdev-api __sandbox-helper`), blocking and single-threaded.
//! - `channel`: the helper's end of its socket to the server.
//! - `children`: the command's init and shell, between `clone` and `exec`.
//! - `confine`: what each command's processes do to themselves before `exec`.
//! - `policy`: which folders commands may read, decided once from the configuration.
//! - `tree`: the command's own root; `identity`: who it is on the host; `network`: its network;
//!   `cgroups`: its limits; `seccomp`: the system calls it may not make.

mod cgroups;
mod channel;
mod children;
mod client;
mod confine;
mod forked;
mod helper;
mod identity;
mod network;
mod policy;
mod protocol;
mod seccomp;
mod tree;

pub use client::{Exit, RunningCommand, Sandbox, SpawnRequest};
pub use helper::main as helper_main;
pub use policy::{ServerFiles, helper_config};
pub use protocol::{Capabilities, HELPER_ARG, HelperConfig, Limits, Network};
