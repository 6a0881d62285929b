//! `rdev shell` driven in tmux as a person would: a prompt, a command, a resize, `exit 3`, and
//! the local terminal as it was before.

use std::time::Duration;

use super::{Rdev, rdev_binary};
use crate::support::{Db, TestApp};

/// A tmux server of this test's own (`-L`), killed when dropped.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    pub fn start(command: &str) -> Self {
        let tmux = Self { socket: format!("rdev-test-{}", uuid::Uuid::new_v4().simple()) };
        tmux.run(&["new-session", "-d", "-s", "t", "-x", "100", "-y", "30", command]);
        tmux
    }

    pub fn run(&self, args: &[&str]) -> String {
        let output =
            std::process::Command::new("tmux").arg("-L").arg(&self.socket).args(args).output().expect("tmux runs");
        assert!(output.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn type_line(&self, line: &str) {
        self.run(&["send-keys", "-t", "t", "-l", line]);
        self.run(&["send-keys", "-t", "t", "Enter"]);
    }

    pub fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "t"])
    }

    /// Waits (15 s at most) until the screen has a line that `wanted` accepts.
    pub async fn wait_for_line(&self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        match self.seen_within(Duration::from_secs(15), &wanted).await {
            Ok(screen) => screen,
            Err(screen) => panic!("never saw {what}; the screen:\n{screen}"),
        }
    }

    /// The screen once a line of it is `wanted`, or the last screen after `timeout`.
    async fn seen_within(&self, timeout: Duration, wanted: &impl Fn(&str) -> bool) -> Result<String, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if screen.lines().any(|line| wanted(line.trim_end())) {
                return Ok(screen);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(screen);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asks the remote shell its size until it says `expected`: the resize travels as a
    /// SIGWINCH to rdev, which may read the keys typed after it first.
    async fn wait_for_size(&self, expected: &str) {
        for _ in 0..15 {
            self.type_line("clear; stty size");
            if self.seen_within(Duration::from_secs(1), &|line: &str| line == expected).await.is_ok() {
                return;
            }
        }
        panic!("the remote shell never said its size is {expected}:\n{}", self.screen());
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux").arg("-L").arg(&self.socket).arg("kill-server").output();
    }
}

#[tokio::test]
async fn a_terminal_in_tmux_runs_resizes_exits_with_its_code_and_leaves_the_terminal_sane() {
    let app = TestApp::on(Db::Sqlite).await;
    let rdev = Rdev::for_app(&app);
    let dir = rdev.home.path();
    let tmux = Tmux::start("bash --norc --noprofile");
    tmux.type_line("PS1='local> '");
    tmux.type_line(&format!(
        "stty -a > {dir}/before; {env} {bin} shell hello; echo \"rdev-exit=$?\"; stty -a > {dir}/after",
        dir = dir.display(),
        env = rdev.env_line(),
        bin = rdev_binary().display(),
    ));
    // The remote shell's prompt (bash's default, root's `#` or a user's `$`).
    tmux.wait_for_line("the remote prompt", |line| line.ends_with('#') || line.ends_with('$')).await;
    tmux.type_line("echo $((6*7))");
    tmux.wait_for_line("42", |line| line == "42").await;

    tmux.run(&["resize-window", "-t", "t", "-x", "132", "-y", "43"]);
    tmux.wait_for_size("43 132").await;
    tmux.run(&["resize-window", "-t", "t", "-x", "100", "-y", "30"]);
    tmux.wait_for_size("30 100").await;

    tmux.type_line("exit 3");
    tmux.wait_for_line("rdev's exit code", |line| line == "rdev-exit=3").await;
    let after = dir.join("after");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while std::fs::read_to_string(&after).map_or(true, |text| text.is_empty()) {
        assert!(tokio::time::Instant::now() < deadline, "stty -a after never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = std::fs::read_to_string(dir.join("before")).unwrap();
    assert_eq!(std::fs::read_to_string(&after).unwrap(), before, "the local terminal's settings are as they were");
    let cooked = ["icanon", "echo", "isig"].iter().all(|flag| before.split_whitespace().any(|word| word == *flag));
    assert!(cooked, "a cooked terminal to compare: {before}");
}
