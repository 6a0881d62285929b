//! The binary's own usage: help for every subcommand, a clear refusal of a bad command line,
//! completions. (Against a real server, `rdev` is tested from the server's suite:
//! `tests/api/cli`, which runs this crate's binary.)

use std::process::Command;

const RDEV: &str = env!("CARGO_BIN_EXE_rdev");

fn rdev(args: &[&str]) -> std::process::Output {
    Command::new(RDEV).args(args).env_clear().output().expect("rdev runs")
}

#[test]
fn every_subcommand_explains_itself() {
    for command in [
        "login",
        "logout",
        "projects",
        "ps",
        "run",
        "logs",
        "cancel",
        "shell",
        "cp",
        "audit",
        "keys",
        "sessions",
        "completions",
    ] {
        let help = rdev(&[command, "--help"]);
        assert!(help.status.success(), "rdev {command} --help");
        assert!(String::from_utf8_lossy(&help.stdout).contains("Usage: rdev"), "rdev {command} --help");
    }
}

#[test]
fn a_bad_command_line_is_refused_with_usage_and_exit_2() {
    let bad = rdev(&["run", "hello"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("<COMMAND>..."));
    let bad = Command::new(RDEV).args(["cp", "a", "b"]).env_clear().env("RDEV_API_KEY", "rdev_x").output().unwrap();
    assert_eq!(bad.status.code(), Some(1), "both sides local: rdev's own error");
    assert_eq!(
        String::from_utf8_lossy(&bad.stderr),
        "rdev: one side must be PROJECT:PATH and the other a local path\n"
    );
}

#[test]
fn completions_are_printed_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let script = rdev(&["completions", shell]);
        assert!(script.status.success() && String::from_utf8_lossy(&script.stdout).contains("rdev"), "{shell}");
    }
}
