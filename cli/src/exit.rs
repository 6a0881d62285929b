//! The exit codes `rdev run`, `rdev logs -f` and `rdev shell` end with: the command's own, or
//! one of these when it has none.

use serde_json::Value;

/// rdev's own failure (the API refused, the server is unreachable, a bad argument).
pub const ERROR: u8 = 1;
/// The command ran out of time and the server killed it (as `timeout(1)` says it).
pub const TIMED_OUT: u8 = 124;
/// The command ended without an exit code: the server killed it (a limit, a revoked key).
pub const NO_EXIT_CODE: u8 = 125;
/// The command was cancelled (Ctrl-C, `rdev cancel`), as a shell says SIGINT.
pub const CANCELLED: u8 = 130;

/// The exit code for a finished execution or command (`/shell`'s `exit` event or a `Command`).
pub fn of_end(end: &Value) -> u8 {
    if end["timed_out"].as_bool() == Some(true) || end["status"] == "timed_out" {
        return TIMED_OUT;
    }
    if end["status"] == "cancelled" {
        return CANCELLED;
    }
    match end["exit_code"].as_i64() {
        Some(code) => u8::try_from(code.rem_euclid(256)).unwrap_or(NO_EXIT_CODE),
        None => NO_EXIT_CODE,
    }
}

/// Says on stderr why the server ended it, if it said.
pub fn report(end: &Value) {
    if let Some(error) = end["error"].as_str() {
        eprintln!("rdev: {error}");
    } else if end["timed_out"].as_bool() == Some(true) || end["status"] == "timed_out" {
        eprintln!("rdev: the command ran out of time and was killed");
    }
}
