//! Per-key quotas: how much of the server one key may hold at once, so that no key can take
//! every pty, fill the database with sessions, or keep the queue to itself. Each quota has a
//! server default (`RDEV_MAX_*_PER_KEY`) that a key may override (`quotas` on the key, as
//! `rate_limit_per_minute` overrides the rate limit). Past a quota the request is refused with
//! `QuotaExceeded`, naming it; nothing already held is touched.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{DomainError, FieldErrors};

/// The largest value a key's quota may be set to.
pub const MAX_QUOTA: u32 = 1_000_000;

/// A session holds at most this many variables...
pub const MAX_SESSION_VARIABLES: usize = 64;
/// ...of at most this many bytes in all (names and values).
pub const MAX_SESSION_VARIABLE_BYTES: usize = 64 * 1024;

/// One bounded thing a key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    /// Terminals open at once (on one replica: a terminal is a pty of its host).
    Terminals,
    /// Sessions not yet expired or deleted.
    Sessions,
    /// Commands queued or running.
    Commands,
    /// Streams following a command's output at once (on one replica).
    Followers,
    /// Variables of one session.
    SessionVariables,
    /// Bytes of one session's variables, names and values.
    SessionVariableBytes,
}

impl Quota {
    /// The name in the error's `details.limit` and in a key's `quotas`.
    pub fn name(self) -> &'static str {
        match self {
            Quota::Terminals => "terminals",
            Quota::Sessions => "sessions",
            Quota::Commands => "commands",
            Quota::Followers => "followers",
            Quota::SessionVariables => "session_variables",
            Quota::SessionVariableBytes => "session_variable_bytes",
        }
    }

    /// Where the server default is set; `None` for the fixed bounds of a session's variables.
    pub fn setting(self) -> Option<&'static str> {
        match self {
            Quota::Terminals => Some("RDEV_MAX_TERMINALS_PER_KEY"),
            Quota::Sessions => Some("RDEV_MAX_SESSIONS_PER_KEY"),
            Quota::Commands => Some("RDEV_MAX_COMMANDS_PER_KEY"),
            Quota::Followers => Some("RDEV_MAX_FOLLOWERS_PER_KEY"),
            Quota::SessionVariables | Quota::SessionVariableBytes => None,
        }
    }

    /// The refusal, for a key (or session) already holding `max`.
    pub fn exceeded(self, max: u64) -> DomainError {
        let message = match self {
            Quota::Terminals => format!("this API key has {max} terminals open here, its quota"),
            Quota::Sessions => format!("this API key has {max} live sessions, its quota"),
            Quota::Commands => format!("this API key has {max} commands queued or running, its quota"),
            Quota::Followers => format!("this API key follows {max} commands here, its quota"),
            Quota::SessionVariables => format!("a session holds at most {max} variables"),
            Quota::SessionVariableBytes => format!("a session's variables hold at most {max} bytes in all"),
        };
        let message = match self.setting() {
            Some(setting) => {
                format!("{message} ({setting}, or the key's quotas.{}); end one before starting another", self.name())
            }
            None => message,
        };
        DomainError::QuotaExceeded { quota: self, max, message }
    }
}

/// A key's own quotas; `null` (or absent) for the server default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyQuotas {
    /// Terminals open at once, per replica (`RDEV_MAX_TERMINALS_PER_KEY`).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub terminals: Option<u32>,
    /// Live sessions (`RDEV_MAX_SESSIONS_PER_KEY`).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub sessions: Option<u32>,
    /// Commands queued or running (`RDEV_MAX_COMMANDS_PER_KEY`).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub commands: Option<u32>,
    /// Output streams followed at once, per replica (`RDEV_MAX_FOLLOWERS_PER_KEY`).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub followers: Option<u32>,
}

impl KeyQuotas {
    /// Adds an error for each quota outside 1..=`MAX_QUOTA`.
    pub fn check(&self, errors: &mut FieldErrors) {
        let fields = [
            ("terminals", self.terminals),
            ("sessions", self.sessions),
            ("commands", self.commands),
            ("followers", self.followers),
        ];
        for (name, value) in fields {
            if value.is_some_and(|v| !(1..=MAX_QUOTA).contains(&v)) {
                errors.add(
                    format!("quotas.{name}"),
                    format!("must be between 1 and {MAX_QUOTA}, or null for the server default"),
                );
            }
        }
    }
}

/// The quotas a key works under: its own where it has them, else the server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    pub terminals: u32,
    pub sessions: u32,
    pub commands: u32,
    pub followers: u32,
}

impl Quotas {
    /// `self` as server defaults, overridden by `key`.
    pub fn for_key(self, key: &KeyQuotas) -> Quotas {
        Quotas {
            terminals: key.terminals.unwrap_or(self.terminals),
            sessions: key.sessions.unwrap_or(self.sessions),
            commands: key.commands.unwrap_or(self.commands),
            followers: key.followers.unwrap_or(self.followers),
        }
    }

    /// Whether one more of `quota` fits beside the `held` ones.
    pub fn admit(self, quota: Quota, held: u64) -> Result<(), DomainError> {
        let max = u64::from(match quota {
            Quota::Terminals => self.terminals,
            Quota::Sessions => self.sessions,
            Quota::Commands => self.commands,
            Quota::Followers => self.followers,
            Quota::SessionVariables | Quota::SessionVariableBytes => u32::MAX,
        });
        if held < max { Ok(()) } else { Err(quota.exceeded(max)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: Quotas = Quotas { terminals: 16, sessions: 100, commands: 1000, followers: 100 };

    #[test]
    fn a_key_s_own_quota_wins_and_null_means_the_server_s() {
        let quotas = SERVER.for_key(&KeyQuotas { terminals: Some(2), ..KeyQuotas::default() });
        assert_eq!(quotas, Quotas { terminals: 2, ..SERVER });
        assert!(quotas.admit(Quota::Terminals, 1).is_ok());
        let refused = quotas.admit(Quota::Terminals, 2).unwrap_err();
        assert!(matches!(refused, DomainError::QuotaExceeded { quota: Quota::Terminals, max: 2, .. }));
        assert!(refused.to_string().contains("RDEV_MAX_TERMINALS_PER_KEY"), "{refused}");
    }

    #[test]
    fn quotas_outside_the_range_are_refused_by_field() {
        let mut errors = FieldErrors::default();
        KeyQuotas { sessions: Some(0), commands: Some(MAX_QUOTA + 1), ..KeyQuotas::default() }.check(&mut errors);
        assert_eq!(errors.0.len(), 2, "{errors}");
        assert!(errors.0.contains_key("quotas.sessions") && errors.0.contains_key("quotas.commands"));
    }
}
