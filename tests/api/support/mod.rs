//! What the tests share: the app under test and its builder (`app`), the databases and
//! backends it runs on (`backend`), a clock moved by hand, the real binary as a process,
//! webhook receivers, and in-memory fakes of ports for service tests.

pub mod app;
pub mod backend;
pub mod clock;
pub mod fakes;
pub mod process;
pub mod proxy;
pub mod receiver;
pub mod sse;

pub use app::{Reply, TestApp, http_client, test_config};
pub use backend::{Backend, Db, HELLO_POD, NAMESPACE, fresh_database, project_pod};
pub use clock::ManualClock;
pub use process::{live_processes_with, survivors_of};

/// The defaults a command service fills in, with this timeout and a 1 MiB output budget.
pub fn command_defaults(timeout_secs: u64) -> rdev_api::domain::CommandDefaults {
    rdev_api::domain::CommandDefaults {
        timeout: std::time::Duration::from_secs(timeout_secs),
        max_output_bytes: 1 << 20,
        max_stdin_bytes: 1 << 20,
    }
}
