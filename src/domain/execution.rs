//! A shell command to run now (`ShellRequest` → validated `CommandSpec`) and what came of it
//! (`ExecOutcome` from the executor, `Execution` as the API returns it).

use std::{
    collections::BTreeMap,
    path::{Component, Path},
    time::Duration,
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use bytes::Bytes;

use super::{DomainError, FieldErrors, MIN_OUTPUT_BYTES, Omitted, ProjectId, ShellState};

pub const MAX_COMMAND_BYTES: usize = 16 * 1024;
pub const MAX_TIMEOUT_SECS: u64 = 3600;
pub const MAX_ENV_VARS: usize = 64;
pub const MAX_ENV_VALUE_BYTES: usize = 32 * 1024;
pub const MAX_WORKDIR_BYTES: usize = 4096;

/// The body of `POST /projects/{id}/shell`, exactly as the client sent it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShellRequest {
    /// Run as `/bin/sh -c <command>`; 1 to 16384 bytes, no NUL.
    #[schema(example = "echo hello", min_length = 1, max_length = 16384, pattern = "^[^\\x00]+$")]
    pub command: String,
    /// 1 to 3600; the server's `RDEV_COMMAND_TIMEOUT` when absent.
    #[schema(minimum = 1, maximum = 3600)]
    pub timeout_secs: Option<u64>,
    /// A folder inside the project, relative to its root.
    pub workdir: Option<String>,
    /// Extra environment variables; names match `[A-Za-z_][A-Za-z0-9_]*`, at most 64.
    pub env: Option<BTreeMap<String, String>>,
    /// Bytes kept per stream, 1024 to the server's `RDEV_MAX_OUTPUT_BYTES` (the default): past
    /// it, the first and the last half are kept and the middle is dropped.
    #[schema(minimum = 1024)]
    pub max_output_bytes: Option<u64>,
    /// Text written to the command's stdin, which is then closed (so `cat` or `read` see EOF).
    /// Not with `stdin_base64`. Absent: stdin is closed at start.
    pub stdin: Option<String>,
    /// Bytes for stdin, base64 (standard alphabet, padded). Not with `stdin`.
    #[schema(content_encoding = "base64")]
    pub stdin_base64: Option<String>,
}

/// What the server fills in where a request is silent, and the most it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandDefaults {
    pub timeout: Duration,
    /// `RDEV_MAX_OUTPUT_BYTES`: the default and the most a request may ask for.
    pub max_output_bytes: usize,
    /// `RDEV_MAX_STDIN_BYTES`: the most a request's stdin may hold (decoded).
    pub max_stdin_bytes: usize,
}

/// A validated command, ready for any executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    pub command: String,
    pub timeout: Duration,
    /// Relative, normalised (no `.` or `..` components), never escaping the project root.
    pub workdir: Option<String>,
    pub env: BTreeMap<String, String>,
    /// Bytes kept per stream (head and tail halves).
    pub max_output_bytes: usize,
    /// Written to stdin, which is then closed; `None`: stdin closed at start.
    pub stdin: Option<Bytes>,
    /// A session's command: the shell's final directory and environment are reported
    /// (`ExecOutcome::shell_state`) when it ends on its own.
    pub keep_state: bool,
}

impl CommandSpec {
    /// Checks every field and reports every problem at once.
    pub fn from_request(request: ShellRequest, defaults: CommandDefaults) -> Result<Self, DomainError> {
        let mut errors = FieldErrors::default();
        check_command(&request.command, &mut errors);
        let timeout = match request.timeout_secs {
            None => defaults.timeout,
            Some(secs) if (1..=MAX_TIMEOUT_SECS).contains(&secs) => Duration::from_secs(secs),
            Some(_) => {
                errors.add("timeout_secs", format!("must be between 1 and {MAX_TIMEOUT_SECS}"));
                defaults.timeout
            }
        };
        let most = defaults.max_output_bytes;
        let least = MIN_OUTPUT_BYTES.min(most);
        let max_output_bytes = match request.max_output_bytes.map(usize::try_from) {
            None => most,
            Some(Ok(bytes)) if (least..=most).contains(&bytes) => bytes,
            Some(_) => {
                errors.add("max_output_bytes", format!("must be between {least} and {most}"));
                most
            }
        };
        let workdir = match request.workdir.as_deref() {
            None | Some("") => None,
            Some(raw) => normalize_workdir(raw).map_err(|msg| errors.add("workdir", msg)).ok().flatten(),
        };
        let env = request.env.unwrap_or_default();
        check_env(&env, &mut errors);
        let stdin = stdin_of(request.stdin, request.stdin_base64, defaults.max_stdin_bytes, &mut errors);
        errors.into_result()?;
        Ok(Self { command: request.command, timeout, workdir, env, max_output_bytes, stdin, keep_state: false })
    }
}

/// The bytes of `stdin` or `stdin_base64` (at most one), within `most`.
fn stdin_of(text: Option<String>, base64: Option<String>, most: usize, errors: &mut FieldErrors) -> Option<Bytes> {
    use base64::Engine as _;
    let (field, bytes) = match (text, base64) {
        (None, None) => return None,
        (Some(_), Some(_)) => {
            errors.add("stdin_base64", "give stdin or stdin_base64, not both");
            return None;
        }
        (Some(text), None) => ("stdin", text.into_bytes()),
        (None, Some(encoded)) => match base64::engine::general_purpose::STANDARD.decode(encoded.as_bytes()) {
            Ok(bytes) => ("stdin_base64", bytes),
            Err(error) => {
                errors.add("stdin_base64", format!("is not valid base64: {error}"));
                return None;
            }
        },
    };
    if bytes.len() > most {
        errors.add(field, format!("must be at most {most} bytes (RDEV_MAX_STDIN_BYTES), got {}", bytes.len()));
        return None;
    }
    Some(Bytes::from(bytes))
}

fn check_command(command: &str, errors: &mut FieldErrors) {
    // A blank command would run a shell that does nothing and reports success.
    if command.trim().is_empty() {
        errors.add("command", "must not be empty or only whitespace");
    } else if command.len() > MAX_COMMAND_BYTES {
        errors.add("command", format!("must be at most {MAX_COMMAND_BYTES} bytes"));
    } else if command.contains('\0') {
        errors.add("command", "must not contain NUL bytes");
    }
}

pub(super) fn check_env(env: &BTreeMap<String, String>, errors: &mut FieldErrors) {
    if env.len() > MAX_ENV_VARS {
        errors.add("env", format!("at most {MAX_ENV_VARS} variables"));
        return;
    }
    for (name, value) in env {
        if !is_env_name(name) {
            errors.add("env", format!("invalid variable name {name:?}: names match [A-Za-z_][A-Za-z0-9_]*"));
        } else if value.contains('\0') {
            errors.add("env", format!("value of {name} must not contain NUL bytes"));
        } else if value.len() > MAX_ENV_VALUE_BYTES {
            errors.add("env", format!("value of {name} must be at most {MAX_ENV_VALUE_BYTES} bytes"));
        }
    }
}

pub fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name.len() <= 256
}

/// Resolves `.` and `..` lexically; `Ok(None)` means the project root itself.
pub(super) fn normalize_workdir(raw: &str) -> Result<Option<String>, &'static str> {
    if raw.len() > MAX_WORKDIR_BYTES {
        return Err("is too long");
    }
    if raw.contains('\0') {
        return Err("must not contain NUL bytes");
    }
    let mut parts: Vec<&str> = Vec::new();
    for component in Path::new(raw).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str().ok_or("must be valid UTF-8")?),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop().ok_or("must not escape the project")?;
            }
            Component::RootDir | Component::Prefix(_) => return Err("must be relative to the project"),
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

/// What an executor reports. A command that ran and exited non-zero is an outcome, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    /// The exit status; `128 + signal` when a signal ended it, as shells report it.
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// The bytes dropped from the middle of stdout, when it outgrew its budget.
    pub stdout_omitted: Option<Omitted>,
    pub stderr_omitted: Option<Omitted>,
    pub timed_out: bool,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_ms: u64,
    /// A session's command that ended on its own (not killed, not timed out): the shell's state
    /// as it exited, as its wrapper reported it on a channel of its own.
    pub shell_state: Option<Box<ShellState>>,
    /// Why the sandbox stopped the command, when a limit did (memory, processes).
    pub error: Option<String>,
}

/// The response of `POST /projects/{id}/shell`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Execution {
    pub execution_id: Uuid,
    pub project_id: ProjectId,
    pub command: String,
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// Where stdout's middle was dropped (null when nothing was): `stdout` is then its first
    /// half, then its last half, of `max_output_bytes`.
    pub stdout_omitted: Option<Omitted>,
    pub stderr_omitted: Option<Omitted>,
    pub timed_out: bool,
    /// Why the sandbox stopped the command, when one of its limits did (e.g. "the command
    /// reached its memory limit (256 MiB, RDEV_SANDBOX_MEMORY) and was killed"); null otherwise.
    pub error: Option<String>,
    pub duration_ms: u64,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

impl Execution {
    pub fn new(execution_id: Uuid, project_id: ProjectId, command: String, outcome: ExecOutcome) -> Self {
        Self {
            execution_id,
            project_id,
            command,
            exit_code: outcome.exit_code,
            stdout: outcome.stdout,
            stderr: outcome.stderr,
            stdout_truncated: outcome.stdout_truncated,
            stderr_truncated: outcome.stderr_truncated,
            stdout_omitted: outcome.stdout_omitted,
            stderr_omitted: outcome.stderr_omitted,
            timed_out: outcome.timed_out,
            error: outcome.error,
            duration_ms: outcome.duration_ms,
            started_at: outcome.started_at,
            finished_at: outcome.finished_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(command: &str) -> ShellRequest {
        ShellRequest {
            command: command.into(),
            timeout_secs: None,
            workdir: None,
            env: None,
            max_output_bytes: None,
            stdin: None,
            stdin_base64: None,
        }
    }

    fn defaults(timeout_secs: u64) -> CommandDefaults {
        CommandDefaults { timeout: Duration::from_secs(timeout_secs), max_output_bytes: 1 << 20, max_stdin_bytes: 16 }
    }

    fn field_errors(result: Result<CommandSpec, DomainError>) -> FieldErrors {
        match result {
            Err(DomainError::Validation(errors)) => errors,
            other => panic!("expected validation error, got {other:?}"),
        }
    }

    #[test]
    fn normalizes_workdir_without_escaping() {
        assert_eq!(normalize_workdir("a/./b/../c"), Ok(Some("a/c".into())));
        assert_eq!(normalize_workdir("."), Ok(None));
        assert_eq!(normalize_workdir("a/.."), Ok(None));
        assert!(normalize_workdir("../x").is_err());
        assert!(normalize_workdir("a/../../x").is_err());
        assert!(normalize_workdir("/etc").is_err());
    }

    #[test]
    fn reports_every_bad_field_at_once() {
        let mut req = request("echo\0hi");
        req.timeout_secs = Some(0);
        req.workdir = Some("../up".into());
        req.env = Some([("1BAD".to_string(), "x".to_string())].into());
        req.max_output_bytes = Some(1023);
        let errors = field_errors(CommandSpec::from_request(req, defaults(60)));
        let fields: Vec<_> = errors.0.keys().map(String::as_str).collect();
        assert_eq!(fields, ["command", "env", "max_output_bytes", "timeout_secs", "workdir"]);
    }

    #[test]
    fn rejects_oversize_and_empty_commands() {
        let long = "x".repeat(MAX_COMMAND_BYTES + 1);
        assert!(field_errors(CommandSpec::from_request(request(&long), defaults(1))).0.contains_key("command"));
        assert!(field_errors(CommandSpec::from_request(request(""), defaults(1))).0.contains_key("command"));
        assert!(CommandSpec::from_request(request(&"x".repeat(MAX_COMMAND_BYTES)), defaults(1)).is_ok());
    }

    #[test]
    fn stdin_is_text_or_base64_within_its_limit() {
        let spec = |text: Option<&str>, base64: Option<&str>| {
            let mut req = request("cat");
            req.stdin = text.map(Into::into);
            req.stdin_base64 = base64.map(Into::into);
            CommandSpec::from_request(req, defaults(1))
        };
        assert_eq!(spec(Some("hello"), None).unwrap().stdin.as_deref(), Some(&b"hello"[..]));
        assert_eq!(spec(None, Some("AP8=")).unwrap().stdin.as_deref(), Some(&[0u8, 255][..]));
        assert_eq!(spec(Some(""), None).unwrap().stdin.as_deref(), Some(&b""[..]));
        assert!(spec(None, None).unwrap().stdin.is_none());
        assert!(field_errors(spec(Some("a"), Some("YQ=="))).0.contains_key("stdin_base64"));
        assert!(field_errors(spec(None, Some("not base64!"))).0.contains_key("stdin_base64"));
        assert!(field_errors(spec(Some(&"x".repeat(17)), None)).0.contains_key("stdin"));
        assert!(spec(Some(&"x".repeat(16)), None).is_ok());
    }

    #[test]
    fn env_names() {
        assert!(is_env_name("_A1") && is_env_name("foo"));
        assert!(!is_env_name("") && !is_env_name("1A") && !is_env_name("A-B") && !is_env_name("A=B"));
    }
}
