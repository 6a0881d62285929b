//! Queued commands: what a client asks to run later (`EnqueueRequest`), and the persisted
//! `Command` as it moves from `queued` to a final status.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    AuditOutcome, Caller, CommandDefaults, CommandSpec, DomainError, ExecOutcome, FieldErrors, Omitted, ProjectId,
    ShellRequest,
};

pub const DEFAULT_PRIORITY: u8 = 5;
pub const MAX_PRIORITY: u8 = 9;
pub const MAX_ATTEMPTS: u32 = 10;

/// The body of `POST /projects/{id}/commands`: a shell request plus queueing options.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnqueueRequest {
    /// Run as `/bin/sh -c <command>`; 1 to 16384 bytes, no NUL.
    #[schema(example = "make test", min_length = 1, max_length = 16384, pattern = "^[^\\x00]+$")]
    pub command: String,
    /// 1 to 3600; the server's `RDEV_COMMAND_TIMEOUT` when absent.
    #[schema(minimum = 1, maximum = 3600)]
    pub timeout_secs: Option<u64>,
    pub workdir: Option<String>,
    /// Extra environment variables; names match `[A-Za-z_][A-Za-z0-9_]*`, at most 64.
    pub env: Option<BTreeMap<String, String>>,
    /// 0 to 9; 9 runs first. Default 5.
    #[schema(minimum = 0, maximum = 9)]
    pub priority: Option<u8>,
    /// How many times the command may be started, 1 (default) to 10. Shell commands are not
    /// idempotent: only above 1 is a command whose worker died started again.
    #[schema(minimum = 1, maximum = 10)]
    pub max_attempts: Option<u32>,
    /// Bytes kept per stream, 1024 to the server's `RDEV_MAX_OUTPUT_BYTES` (the default).
    #[schema(minimum = 1024)]
    pub max_output_bytes: Option<u64>,
    /// Text written to the command's stdin, which is then closed. Not with `stdin_base64`.
    pub stdin: Option<String>,
    /// Bytes for stdin, base64 (standard alphabet, padded). Not with `stdin`.
    #[schema(content_encoding = "base64")]
    pub stdin_base64: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
}

impl CommandStatus {
    pub const ALL: [Self; 6] =
        [Self::Queued, Self::Running, Self::Succeeded, Self::Failed, Self::TimedOut, Self::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    pub fn is_final(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }

    /// The final status of a command that ran to an exit code or its timeout.
    pub fn of_exit(exit_code: i32, timed_out: bool) -> Self {
        match (timed_out, exit_code) {
            (true, _) => Self::TimedOut,
            (false, 0) => Self::Succeeded,
            (false, _) => Self::Failed,
        }
    }
}

/// What started a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CommandOrigin {
    /// `POST /projects/{id}/shell`: run now, its client waiting.
    Shell,
    /// `POST /projects/{id}/commands`: run by a queue worker.
    Queue,
    /// `POST /sessions/{id}/shell`: run now in a session.
    Session,
}

impl CommandOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shell => "shell",
            Self::Queue => "queue",
            Self::Session => "session",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Shell, Self::Queue, Self::Session].into_iter().find(|o| o.as_str() == raw)
    }
}

/// A command as stored and returned by `GET /commands/{id}`: queued, or run now by `/shell`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Command {
    pub id: Uuid,
    pub origin: CommandOrigin,
    /// The session it ran in (origin `session`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<Uuid>,
    pub project_id: ProjectId,
    pub command: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    #[serde(skip)]
    pub env: BTreeMap<String, String>,
    /// What a queued command's stdin gets (kept until it runs); commands run now keep none.
    #[serde(skip)]
    pub stdin: Option<Bytes>,
    pub timeout_secs: u64,
    /// Bytes kept per stream: past it, the first and the last half.
    pub max_output_bytes: usize,
    pub priority: u8,
    pub status: CommandStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// Where stdout's middle was dropped (null when nothing was).
    pub stdout_omitted: Option<Omitted>,
    pub stderr_omitted: Option<Omitted>,
    /// Why it ended without an exit code, e.g. `worker lost`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub attempts: u32,
    pub max_attempts: u32,
    pub cancel_requested: bool,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Who enqueued it, for the audit entry written when it finishes.
    #[serde(skip)]
    pub caller: Caller,
}

impl Command {
    /// Validates a request into a new queued command.
    pub fn new(
        request: EnqueueRequest,
        project_id: ProjectId,
        caller: Caller,
        defaults: CommandDefaults,
        now: DateTime<Utc>,
    ) -> Result<Self, DomainError> {
        let mut errors = FieldErrors::default();
        let priority = request.priority.unwrap_or(DEFAULT_PRIORITY);
        if priority > MAX_PRIORITY {
            errors.add("priority", format!("must be between 0 and {MAX_PRIORITY}"));
        }
        let max_attempts = request.max_attempts.unwrap_or(1);
        if !(1..=MAX_ATTEMPTS).contains(&max_attempts) {
            errors.add("max_attempts", format!("must be between 1 and {MAX_ATTEMPTS}"));
        }
        let shell = ShellRequest {
            command: request.command,
            timeout_secs: request.timeout_secs,
            workdir: request.workdir,
            env: request.env,
            max_output_bytes: request.max_output_bytes,
            stdin: request.stdin,
            stdin_base64: request.stdin_base64,
        };
        let spec = match CommandSpec::from_request(shell, defaults) {
            Ok(spec) => Some(spec),
            Err(DomainError::Validation(more)) => {
                more.0.into_iter().for_each(|(field, message)| errors.add(field, message));
                None
            }
            Err(other) => return Err(other),
        };
        errors.into_result()?;
        let spec = spec.ok_or_else(|| DomainError::internal(anyhow::anyhow!("validated spec missing")))?;
        let fresh = Fresh { id: Uuid::new_v4(), origin: CommandOrigin::Queue, priority, max_attempts };
        Ok(Self { stdin: spec.stdin.clone(), ..Self::fresh(fresh, project_id, &spec, caller, now) })
    }

    /// A command run now (`/shell`) as it starts, its id the execution's.
    pub fn ran_now(
        id: Uuid,
        project_id: ProjectId,
        spec: &CommandSpec,
        caller: Caller,
        started_at: DateTime<Utc>,
    ) -> Self {
        let fresh = Fresh { id, origin: CommandOrigin::Shell, priority: DEFAULT_PRIORITY, max_attempts: 1 };
        Self {
            status: CommandStatus::Running,
            attempts: 1,
            started_at: Some(started_at),
            ..Self::fresh(fresh, project_id, spec, caller, started_at)
        }
    }

    /// A session's command as it starts (`ran_now`, in `session_id`).
    pub fn in_session(
        id: Uuid,
        session_id: Uuid,
        project_id: ProjectId,
        spec: &CommandSpec,
        caller: Caller,
        started_at: DateTime<Utc>,
    ) -> Self {
        Self {
            origin: CommandOrigin::Session,
            session_id: Some(session_id),
            ..Self::ran_now(id, project_id, spec, caller, started_at)
        }
    }

    /// A command of `spec`, queued, that has not run.
    fn fresh(
        fresh: Fresh,
        project_id: ProjectId,
        spec: &CommandSpec,
        caller: Caller,
        created_at: DateTime<Utc>,
    ) -> Self {
        Self {
            id: fresh.id,
            origin: fresh.origin,
            session_id: None,
            project_id,
            command: spec.command.clone(),
            workdir: spec.workdir.clone(),
            env: spec.env.clone(),
            stdin: None,
            timeout_secs: spec.timeout.as_secs(),
            max_output_bytes: spec.max_output_bytes,
            priority: fresh.priority,
            status: CommandStatus::Queued,
            exit_code: None,
            stdout: None,
            stderr: None,
            stdout_truncated: false,
            stderr_truncated: false,
            stdout_omitted: None,
            stderr_omitted: None,
            error: None,
            attempts: 0,
            max_attempts: fresh.max_attempts,
            cancel_requested: false,
            created_at,
            started_at: None,
            finished_at: None,
            caller,
        }
    }

    /// The command as `end` leaves it, at `at`.
    pub fn ended(mut self, end: &CommandEnd, at: DateTime<Utc>) -> Self {
        self.status = end.status();
        self.finished_at = Some(at);
        match end {
            CommandEnd::Ran(outcome) => {
                self.exit_code = Some(outcome.exit_code);
                self.stdout = Some(outcome.stdout.clone());
                self.stderr = Some(outcome.stderr.clone());
                self.stdout_truncated = outcome.stdout_truncated;
                self.stderr_truncated = outcome.stderr_truncated;
                self.stdout_omitted = outcome.stdout_omitted;
                self.stderr_omitted = outcome.stderr_omitted;
                self.started_at = Some(outcome.started_at);
                self.finished_at = Some(outcome.finished_at);
                self.error.clone_from(&outcome.error);
            }
            CommandEnd::Cancelled => {}
            CommandEnd::Stopped(message) | CommandEnd::Error(message) => self.error = Some(message.clone()),
        }
        self
    }

    pub fn spec(&self) -> CommandSpec {
        CommandSpec {
            command: self.command.clone(),
            timeout: std::time::Duration::from_secs(self.timeout_secs),
            workdir: self.workdir.clone(),
            env: self.env.clone(),
            max_output_bytes: self.max_output_bytes,
            stdin: self.stdin.clone(),
            keep_state: false,
        }
    }
}

/// What a new command is besides its spec.
struct Fresh {
    id: Uuid,
    origin: CommandOrigin,
    priority: u8,
    max_attempts: u32,
}

/// How a claimed command ended, as its worker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandEnd {
    Ran(ExecOutcome),
    Cancelled,
    /// Stopped before it ended by something other than a cancel (its client went away):
    /// `cancelled`, with this as its `error`.
    Stopped(String),
    /// It could not run (project gone, executor unavailable): `failed` with this error.
    Error(String),
}

/// How an execution ended, in the words of each place that records it. This is the one place
/// those words are decided.
impl CommandEnd {
    /// The final status this ending gives a command.
    pub fn status(&self) -> CommandStatus {
        match self {
            CommandEnd::Ran(outcome) => CommandStatus::of_exit(outcome.exit_code, outcome.timed_out),
            CommandEnd::Cancelled | CommandEnd::Stopped(_) => CommandStatus::Cancelled,
            CommandEnd::Error(_) => CommandStatus::Failed,
        }
    }

    /// The audit log's outcome: what the status says (a cancel, or a client that left,
    /// `cancelled`), an error `error` (it never ran to an exit).
    pub fn audit_outcome(&self) -> AuditOutcome {
        match self {
            CommandEnd::Ran(_) => match self.status() {
                CommandStatus::Succeeded => AuditOutcome::Succeeded,
                CommandStatus::TimedOut => AuditOutcome::TimedOut,
                _ => AuditOutcome::Failed,
            },
            CommandEnd::Cancelled | CommandEnd::Stopped(_) => AuditOutcome::Cancelled,
            CommandEnd::Error(_) => AuditOutcome::Error,
        }
    }

    /// The `outcome` label of `command_executions_total`: succeeded, failed, timed_out,
    /// cancelled or error.
    pub fn label(&self) -> &'static str {
        match self {
            CommandEnd::Error(_) => "error",
            _ => self.status().as_str(),
        }
    }

    pub fn exit_code(&self) -> Option<i32> {
        match self {
            CommandEnd::Ran(outcome) => Some(outcome.exit_code),
            _ => None,
        }
    }

    pub fn duration_ms(&self) -> Option<u64> {
        match self {
            CommandEnd::Ran(outcome) => Some(outcome.duration_ms),
            _ => None,
        }
    }

    /// What the audit says of why it ended so: its error, if it has one.
    pub fn reason(&self) -> Option<&str> {
        match self {
            CommandEnd::Ran(outcome) => outcome.error.as_deref(),
            CommandEnd::Cancelled => None,
            CommandEnd::Stopped(message) | CommandEnd::Error(message) => Some(message),
        }
    }
}

/// Filters of `GET /commands`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandFilter {
    pub project_id: Option<ProjectId>,
    pub status: Option<CommandStatus>,
    pub reader: CommandReader,
}

/// Who reads commands. A session is its key's alone, and so are the commands run in it: a key
/// reads every command outside sessions, and a session's command only when it ran it; `admin`
/// reads everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CommandReader {
    #[default]
    Admin,
    Key(Uuid),
}

impl CommandReader {
    pub fn may_read(self, command: &Command) -> bool {
        match self {
            CommandReader::Admin => true,
            CommandReader::Key(key) => command.session_id.is_none() || command.caller.api_key_id == Some(key),
        }
    }

    /// The key whose session commands are readable, `None` when all are.
    pub fn key(self) -> Option<Uuid> {
        match self {
            CommandReader::Admin => None,
            CommandReader::Key(key) => Some(key),
        }
    }
}
