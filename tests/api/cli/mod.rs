//! `rdev`, the command-line client, against a real server: run, logs, shell (in tmux), cp,
//! login. The binary is the workspace's own build of `cli/`.

mod cp;
mod login;
mod run;
mod shell;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use tempfile::TempDir;
use tokio::process::Command;

use crate::support::TestApp;

/// The `rdev` binary beside this test binary (`target/debug/rdev`): nextest and `cargo test
/// --workspace` build every binary of the workspace first.
pub fn rdev_binary() -> PathBuf {
    let test_binary = std::env::current_exe().expect("the test binary's path");
    let debug_dir = test_binary.parent().and_then(Path::parent).expect("target/debug");
    let binary = debug_dir.join("rdev");
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build -p rdev-cli` (the test script builds the workspace)",
        binary.display()
    );
    binary
}

/// `rdev` as one user: a private home and config folder, a server URL and a key.
#[derive(Clone)]
pub struct Rdev {
    pub home: Arc<TempDir>,
    pub url: String,
    pub key: String,
}

impl Rdev {
    pub fn for_app(app: &TestApp) -> Self {
        Self::at(&format!("http://{}", app.addr), &app.admin_key)
    }

    pub fn at(url: &str, key: &str) -> Self {
        Self { home: Arc::new(tempfile::tempdir().expect("home")), url: url.into(), key: key.into() }
    }

    /// This user's whole environment: nothing of the test's leaks in.
    pub fn environment(&self) -> [(&'static str, std::ffi::OsString); 5] {
        [
            ("PATH", std::env::var_os("PATH").unwrap_or_default()),
            ("HOME", self.home.path().into()),
            ("XDG_CONFIG_HOME", self.home.path().join(".config").into()),
            ("RDEV_URL", self.url.clone().into()),
            ("RDEV_API_KEY", self.key.clone().into()),
        ]
    }

    /// The command as this user runs it, in their home.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(rdev_binary());
        command
            .args(args)
            .env_clear()
            .envs(self.environment())
            .current_dir(self.home.path())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Runs it to its end (a minute at most): exit code, stdout, stderr.
    pub async fn run(&self, args: &[&str]) -> Ran {
        let output = tokio::time::timeout(Duration::from_secs(60), self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("rdev {args:?} did not end"))
            .expect("rdev runs");
        Ran {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// The environment a shell in tmux needs to run this user's `rdev`.
    pub fn env_line(&self) -> String {
        format!(
            "env -i PATH=\"$PATH\" TERM=xterm-256color HOME={home} XDG_CONFIG_HOME={home}/.config RDEV_URL={} RDEV_API_KEY={}",
            self.url,
            self.key,
            home = self.home.path().display()
        )
    }
}

#[derive(Debug)]
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}
