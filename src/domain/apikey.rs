//! API keys: scoped, expiring credentials. The secret (`rdev_…`) is shown once; only its SHA-256
//! is stored, so a leaked database does not leak working keys.

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use rand::{RngExt, distr::Alphanumeric};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{DomainError, KeyQuotas, Unauthenticated};

/// What a key may do. `admin` implies every other scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub enum Scope {
    #[serde(rename = "projects:read")]
    ProjectsRead,
    #[serde(rename = "commands:execute")]
    CommandsExecute,
    #[serde(rename = "commands:read")]
    CommandsRead,
    #[serde(rename = "audit:read")]
    AuditRead,
    #[serde(rename = "webhooks:manage")]
    WebhooksManage,
    #[serde(rename = "keys:admin")]
    KeysAdmin,
    #[serde(rename = "files:read")]
    FilesRead,
    #[serde(rename = "files:write")]
    FilesWrite,
    #[serde(rename = "terminal:open")]
    TerminalOpen,
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 10] = [
        Scope::ProjectsRead,
        Scope::CommandsExecute,
        Scope::CommandsRead,
        Scope::AuditRead,
        Scope::WebhooksManage,
        Scope::KeysAdmin,
        Scope::FilesRead,
        Scope::FilesWrite,
        Scope::TerminalOpen,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::ProjectsRead => "projects:read",
            Scope::CommandsExecute => "commands:execute",
            Scope::CommandsRead => "commands:read",
            Scope::AuditRead => "audit:read",
            Scope::WebhooksManage => "webhooks:manage",
            Scope::KeysAdmin => "keys:admin",
            Scope::FilesRead => "files:read",
            Scope::FilesWrite => "files:write",
            Scope::TerminalOpen => "terminal:open",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        Self::ALL.into_iter().find(|scope| scope.as_str() == raw).ok_or_else(|| {
            let known: Vec<_> = Self::ALL.iter().map(|s| s.as_str()).collect();
            DomainError::invalid("scopes", format!("unknown scope {raw:?}; known scopes: {}", known.join(", ")))
        })
    }

    /// Parses a comma-separated list such as `projects:read,commands:execute`.
    pub fn parse_list(raw: &str) -> Result<Vec<Self>, DomainError> {
        raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(Self::parse).collect()
    }
}

/// The body of `POST /api-keys`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    /// 1 to 100 characters.
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// At least one; a key can only grant scopes it holds itself.
    #[schema(min_items = 1)]
    pub scopes: Vec<Scope>,
    /// Must lie in the future; absent means the key does not expire.
    pub expires_at: Option<DateTime<Utc>>,
    /// CIDRs or single addresses (IPv4 or IPv6) the key may be used from; empty means anywhere.
    #[serde(default)]
    pub allowed_ips: Vec<String>,
    /// Requests per minute (1 to 1,000,000); absent means the server default.
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub rate_limit_per_minute: Option<u32>,
    /// The key's own quotas; absent (or a `null` one) means the server default.
    #[serde(default)]
    pub quotas: KeyQuotas,
}

/// The body of `PATCH /api-keys/{id}`: absent fields stay as they are; `null` clears
/// `expires_at` (never expires), `rate_limit_per_minute` (server default) and `allowed_ips`
/// (anywhere).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyChanges {
    pub name: Option<String>,
    pub scopes: Option<Vec<Scope>>,
    #[serde(default, deserialize_with = "super::present")]
    #[schema(value_type = Option<Vec<String>>)]
    pub allowed_ips: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "super::present")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 1_000_000)]
    pub rate_limit_per_minute: Option<Option<u32>>,
    #[serde(default, deserialize_with = "super::present")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub expires_at: Option<Option<DateTime<Utc>>>,
    /// Replaces the key's quotas as a whole; a `null` one is the server default.
    pub quotas: Option<KeyQuotas>,
}

/// The body of `POST /api-keys/{id}/rotate`; may be omitted.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    /// How long the old secret keeps working, 0 (default) to 604800 (a week).
    #[serde(default)]
    pub grace_seconds: u64,
}

/// A key as stored and listed; never holds the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    /// The first characters of the secret, enough to recognise it in a list.
    pub prefix: String,
    pub scopes: Vec<Scope>,
    #[schema(value_type = Vec<String>, example = json!(["10.0.0.0/8"]))]
    pub allowed_ips: Vec<IpNet>,
    /// Requests per minute; `null` means the server default.
    pub rate_limit_per_minute: Option<u32>,
    /// The key's own quotas; a `null` one means the server default.
    pub quotas: KeyQuotas,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.iter().any(|s| *s == scope || *s == Scope::Admin)
    }

    /// `Forbidden` naming the missing scope.
    pub fn require(&self, scope: Scope) -> Result<(), DomainError> {
        if self.allows(scope) {
            Ok(())
        } else {
            Err(DomainError::Forbidden(format!("API key lacks the {} scope", scope.as_str())))
        }
    }

    /// Whether the key may be used at `now`: revoked beats expired, as it is the stronger fact.
    pub fn check_usable(&self, now: DateTime<Utc>) -> Result<(), Unauthenticated> {
        if self.revoked_at.is_some_and(|at| at <= now) {
            Err(Unauthenticated::Revoked)
        } else if self.expires_at.is_some_and(|at| at <= now) {
            Err(Unauthenticated::Expired)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
impl ApiKey {
    /// A usable key holding `scopes`, for unit tests.
    pub(crate) fn for_tests(scopes: Vec<Scope>) -> Self {
        Self {
            id: Uuid::new_v4(),
            name: "test".into(),
            prefix: "rdev_test".into(),
            scopes,
            allowed_ips: vec![],
            rate_limit_per_minute: None,
            quotas: KeyQuotas::default(),
            expires_at: None,
            created_at: Utc::now(),
            last_used_at: None,
            revoked_at: None,
        }
    }
}

/// The secret a client sends in `X-API-Key`: `rdev_`, 43 random base62 characters (256 bits),
/// then 6 base62 characters of their CRC32. The checksum lets a secret scanner tell a real key
/// from noise, and lets us refuse a mistyped key before any database work. Its `Debug` output is
/// redacted so it cannot slip into a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeySecret(String);

impl ApiKeySecret {
    pub const PREFIX: &'static str = "rdev_";
    const RANDOM_CHARS: usize = 43;
    const CHECKSUM_CHARS: usize = 6;
    const DISPLAY_PREFIX_LEN: usize = 12;

    pub fn generate() -> Self {
        let random: String = rand::rng().sample_iter(Alphanumeric).take(Self::RANDOM_CHARS).map(char::from).collect();
        Self(format!("{}{random}{}", Self::PREFIX, checksum(&random)))
    }

    /// Checks the shape and the checksum, so a malformed key costs no database work.
    pub fn parse(raw: &str) -> Result<Self, Unauthenticated> {
        let body = raw.strip_prefix(Self::PREFIX).ok_or(Unauthenticated::Malformed)?;
        if body.len() != Self::RANDOM_CHARS + Self::CHECKSUM_CHARS || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(Unauthenticated::Malformed);
        }
        let (random, sum) = body.split_at(Self::RANDOM_CHARS);
        if checksum(random) == sum { Ok(Self(raw.to_owned())) } else { Err(Unauthenticated::Malformed) }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> KeyHash {
        KeyHash(hex(&Sha256::digest(self.0.as_bytes())))
    }

    pub fn display_prefix(&self) -> String {
        self.0.chars().take(Self::DISPLAY_PREFIX_LEN).collect()
    }
}

/// CRC32 of `text` in 6 base62 digits (62^6 > 2^32), most significant first.
fn checksum(text: &str) -> String {
    const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut value = crc32fast::hash(text.as_bytes());
    let mut out = [b'0'; ApiKeySecret::CHECKSUM_CHARS];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(value % 62) as usize];
        value /= 62;
    }
    out.iter().map(|b| char::from(*b)).collect()
}

impl std::fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeySecret({}…)", self.display_prefix())
    }
}

/// Hex SHA-256 of a secret: what the database stores and looks keys up by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyHash(String);

impl KeyHash {
    pub fn from_stored(hex: String) -> Self {
        Self(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison, so response timing says nothing about how much of a hash matched.
    pub fn matches(&self, other: &KeyHash) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    // A table, not `write!("{:02x}")`: every authenticated request hashes its key and looks the
    // hash up, and the formatter cost 8,000 instructions a request (callgrind) where this costs
    // a few hundred.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_two_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff, 0x10]), "000fa5ff10");
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn generated_secrets_parse_and_differ() {
        let a = ApiKeySecret::generate();
        let b = ApiKeySecret::generate();
        assert_ne!(a, b);
        assert_eq!(ApiKeySecret::parse(a.expose()), Ok(a.clone()));
        assert_eq!(a.expose().len(), 5 + 43 + 6);
        assert!(a.hash().matches(&ApiKeySecret::parse(a.expose()).unwrap().hash()));
        assert!(!a.hash().matches(&b.hash()));
    }

    #[test]
    fn malformed_secrets_are_rejected() {
        for raw in
            ["", "rdev_", "rdev_short", "xxxx_0123456789012345678901234567890123", &format!("rdev_{}!", "a".repeat(40))]
        {
            assert_eq!(ApiKeySecret::parse(raw), Err(Unauthenticated::Malformed), "{raw}");
        }
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let secret = ApiKeySecret::generate();
        assert!(!format!("{secret:?}").contains(secret.expose()));
    }

    #[test]
    fn admin_implies_every_scope() {
        let key = ApiKey::for_tests(vec![Scope::Admin]);
        assert!(Scope::ALL.iter().all(|s| key.allows(*s)));
        let reader = ApiKey { scopes: vec![Scope::ProjectsRead], ..key };
        assert!(reader.allows(Scope::ProjectsRead) && !reader.allows(Scope::CommandsExecute));
        assert!(matches!(reader.require(Scope::KeysAdmin), Err(DomainError::Forbidden(_))));
    }

    #[test]
    fn scope_lists_parse() {
        assert_eq!(
            Scope::parse_list("projects:read, commands:execute").unwrap(),
            [Scope::ProjectsRead, Scope::CommandsExecute]
        );
        assert!(Scope::parse_list("projects:write").is_err());
    }
}
