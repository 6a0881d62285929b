//! Sessions: shell state (a folder and environment variables) that outlives one command.
//!
//! No shell is kept running. Each command of a session starts in the session's folder with its
//! variables; its wrapper reports the shell's final state (`ShellState`) on a channel of its
//! own, and `SessionState::after` turns that into the session's next state. A command that did
//! not end on its own reports nothing, and leaves the session as it was.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    DomainError, Execution, FieldErrors, ProjectId, Quota,
    execution::{MAX_ENV_VALUE_BYTES, check_env, is_env_name, normalize_workdir},
    quota::{MAX_SESSION_VARIABLE_BYTES, MAX_SESSION_VARIABLES},
};

/// Variables the shell maintains itself: never kept from one command to the next.
const SHELL_MANAGED: &[&str] = &["PWD", "OLDPWD", "SHLVL", "_"];
/// The most a state record may hold; a larger one (or a partial one) is ignored.
pub const MAX_STATE_RECORD_BYTES: usize = 4 * 1024 * 1024;

/// The body of `POST /projects/{id}/sessions`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSessionRequest {
    /// The folder the first command starts in, relative to the project root (default: the root).
    pub workdir: Option<String>,
    /// Variables every command of the session starts with; names match `[A-Za-z_][A-Za-z0-9_]*`.
    pub env: Option<BTreeMap<String, String>>,
}

/// What a session carries from one command to the next.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionState {
    /// Relative and normalised; `None` is the project root.
    pub workdir: Option<String>,
    pub env: BTreeMap<String, String>,
}

impl SessionState {
    pub fn from_request(request: CreateSessionRequest) -> Result<Self, DomainError> {
        let mut errors = FieldErrors::default();
        let workdir = match request.workdir.as_deref() {
            None | Some("") => None,
            Some(raw) => normalize_workdir(raw).map_err(|msg| errors.add("workdir", msg)).ok().flatten(),
        };
        let env = request.env.unwrap_or_default();
        fits_a_session(&env)?;
        check_env(&env, &mut errors);
        errors.into_result()?;
        Ok(Self { workdir, env })
    }

    /// The state a command leaves, from what its shell reported: the final folder when it is
    /// inside the project (else the folder stays as it was), and the variables it set, changed
    /// or unset, compared with the environment it started with. A state the session could not
    /// hold (too many variables, a value too long) leaves the variables as they were.
    pub fn after(&self, shell: &ShellState) -> Self {
        let workdir = shell.workdir().unwrap_or_else(|| self.workdir.clone());
        let start: BTreeMap<&str, &str> = shell.start.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let end: BTreeMap<&str, &str> = shell.end.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let kept = |name: &str| is_env_name(name) && !SHELL_MANAGED.contains(&name);
        let mut env = self.env.clone();
        for (name, value) in end.iter().filter(|(name, _)| kept(name)) {
            if start.get(name) != Some(value) {
                env.insert((*name).to_owned(), (*value).to_owned());
            }
        }
        for name in start.keys().filter(|name| kept(name) && !end.contains_key(*name)) {
            env.remove(*name);
        }
        let fits = fits_a_session(&env).is_ok() && env.values().all(|v| v.len() <= MAX_ENV_VALUE_BYTES);
        Self { workdir, env: if fits { env } else { self.env.clone() } }
    }
}

/// Whether `env` is within what a session holds: `MAX_SESSION_VARIABLES` names and
/// `MAX_SESSION_VARIABLE_BYTES` of names and values in all.
fn fits_a_session(env: &BTreeMap<String, String>) -> Result<(), DomainError> {
    if env.len() > MAX_SESSION_VARIABLES {
        return Err(Quota::SessionVariables.exceeded(MAX_SESSION_VARIABLES as u64));
    }
    let bytes: usize = env.iter().map(|(name, value)| name.len() + value.len()).sum();
    if bytes > MAX_SESSION_VARIABLE_BYTES {
        return Err(Quota::SessionVariableBytes.exceeded(MAX_SESSION_VARIABLE_BYTES as u64));
    }
    Ok(())
}

/// A session as `GET /sessions/{id}` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Session {
    pub id: Uuid,
    pub project_id: ProjectId,
    /// Where the next command starts, relative to the project root (null: the root).
    pub workdir: Option<String>,
    /// The variables the next command starts with.
    pub env: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    /// When it expires unless used again (`RDEV_SESSION_IDLE_TIMEOUT` after its last use).
    pub expires_at: DateTime<Utc>,
    /// The key that created it: only that key (or an `admin` key) sees and uses it.
    #[serde(skip)]
    pub api_key_id: Option<Uuid>,
}

impl Session {
    pub fn state(&self) -> SessionState {
        SessionState { workdir: self.workdir.clone(), env: self.env.clone() }
    }
}

/// Filters of `GET /sessions`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionFilter {
    pub project_id: Option<ProjectId>,
    /// Only this key's sessions (`None`: every key's, for `admin`).
    pub api_key_id: Option<Uuid>,
}

/// The answer of `POST /sessions/{id}/shell`: the execution, and the session it left.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionExecution {
    #[serde(flatten)]
    pub execution: Execution,
    pub session: Session,
}

/// A session's command as it ends: the session's next state (the same when the command did not
/// end on its own) and its new idle deadline, stored with the command's final state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEnd {
    pub session_id: Uuid,
    /// The command that held the session; the update applies only while it still does.
    pub command_id: Uuid,
    pub state: SessionState,
    pub used_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// The shell's state as its wrapper reported it when it exited: the project root and final
/// folder (physical paths, as the shell saw them) and its environment at start and at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellState {
    pub root: String,
    pub dir: String,
    pub start: Vec<(String, String)>,
    pub end: Vec<(String, String)>,
}

impl ShellState {
    /// Reads a record: `root NUL dir NUL` then the start environment (`NAME=value NUL` each, as
    /// `/proc/PID/environ` holds it), an empty entry, then the final environment. Anything else
    /// (cut short, too big, paths that are not absolute) is no record. A variable that is not
    /// UTF-8 is left out.
    pub fn parse(record: &[u8]) -> Option<Self> {
        if record.len() > MAX_STATE_RECORD_BYTES || record.last() != Some(&0) {
            return None;
        }
        let mut fields = record[..record.len() - 1].split(|&b| b == 0);
        let root = String::from_utf8(fields.next()?.to_vec()).ok()?;
        let dir = String::from_utf8(fields.next()?.to_vec()).ok()?;
        if !root.starts_with('/') || !dir.starts_with('/') {
            return None;
        }
        let mut start = Vec::new();
        let mut boundary = false;
        for field in fields.by_ref() {
            if field.is_empty() {
                boundary = true;
                break;
            }
            start.extend(variable(field));
        }
        if !boundary {
            return None;
        }
        let end = fields.filter(|field| !field.is_empty()).filter_map(variable).collect();
        Some(Self { root, dir, start, end })
    }

    /// The final folder relative to the root, when it is inside the project.
    fn workdir(&self) -> Option<Option<String>> {
        if self.dir == self.root {
            return Some(None);
        }
        let root = self.root.trim_end_matches('/');
        let rest = self.dir.strip_prefix(root)?.strip_prefix('/')?;
        normalize_workdir(rest).ok()
    }
}

fn variable(entry: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(entry).ok()?;
    let (name, value) = text.split_once('=')?;
    Some((name.to_owned(), value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(root: &str, dir: &str, start: &[&str], end: &[&str]) -> Vec<u8> {
        let mut bytes = format!("{root}\0{dir}\0").into_bytes();
        start.iter().for_each(|e| bytes.extend(format!("{e}\0").bytes()));
        bytes.push(0);
        end.iter().for_each(|e| bytes.extend(format!("{e}\0").bytes()));
        bytes
    }

    fn state(workdir: Option<&str>, env: &[(&str, &str)]) -> SessionState {
        SessionState {
            workdir: workdir.map(Into::into),
            env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        }
    }

    #[test]
    fn keeps_the_folder_and_the_variables_set_changed_and_unset() {
        let shell = ShellState::parse(&record(
            "/p",
            "/p/sub",
            &["PATH=/bin", "OLD=1", "KEEP=k", "PWD=/p"],
            &["PATH=/bin", "KEEP=k", "FOO=a b\nc 'q' é", "PWD=/p/sub", "SHLVL=1", "BASH_FUNC_f%%=() {}"],
        ))
        .unwrap();
        let before = state(None, &[("OLD", "1"), ("KEEP", "k")]);
        assert_eq!(before.after(&shell), state(Some("sub"), &[("FOO", "a b\nc 'q' é"), ("KEEP", "k")]));
    }

    #[test]
    fn a_folder_outside_the_project_is_not_kept() {
        for dir in ["/etc", "/pother", "/"] {
            let shell = ShellState::parse(&record("/p", dir, &[], &[])).unwrap();
            assert_eq!(state(Some("a"), &[]).after(&shell).workdir.as_deref(), Some("a"), "{dir}");
        }
        let root = ShellState::parse(&record("/p", "/p", &[], &[])).unwrap();
        assert_eq!(state(Some("a"), &[]).after(&root).workdir, None);
    }

    #[test]
    fn partial_or_malformed_records_are_no_record() {
        let whole = record("/p", "/p", &["A=1"], &["A=2"]);
        assert!(ShellState::parse(&whole).is_some());
        assert!(ShellState::parse(&whole[..whole.len() - 1]).is_none());
        assert!(ShellState::parse(b"/p\0/p\0A=1\0").is_none(), "no boundary");
        assert!(ShellState::parse(b"p\0/p\0\0").is_none());
        assert!(ShellState::parse(b"").is_none());
    }

    #[test]
    fn a_state_too_big_to_hold_keeps_the_variables() {
        let many: Vec<String> = (0..=MAX_SESSION_VARIABLES).map(|i| format!("V{i}=x")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let shell = ShellState::parse(&record("/p", "/p/a", &[], &many)).unwrap();
        let before = state(None, &[("A", "1")]);
        assert_eq!(before.after(&shell), state(Some("a"), &[("A", "1")]));
    }
}
