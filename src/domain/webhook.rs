//! Webhooks: which events a subscriber wants, the secret that signs what it receives, and which
//! addresses a delivery may go to.
//!
//! Signing follows the Standard Webhooks scheme: headers `webhook-id` (stable across retries, so
//! receivers can deduplicate), `webhook-timestamp` (Unix seconds) and
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed with the
//! bytes the secret's `whsec_<base64>` carries.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use hmac::{Hmac, KeyInit as _, Mac as _};
use rand::RngExt as _;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use utoipa::ToSchema;

use super::{CommandStatus, address::is_public};

/// What a webhook can subscribe to: how a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub enum WebhookEvent {
    #[serde(rename = "command.succeeded")]
    CommandSucceeded,
    #[serde(rename = "command.failed")]
    CommandFailed,
    #[serde(rename = "command.timed_out")]
    CommandTimedOut,
    #[serde(rename = "command.cancelled")]
    CommandCancelled,
}

impl WebhookEvent {
    pub const ALL: [Self; 4] =
        [Self::CommandSucceeded, Self::CommandFailed, Self::CommandTimedOut, Self::CommandCancelled];

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|event| event.as_str() == raw)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::CommandSucceeded => "command.succeeded",
            Self::CommandFailed => "command.failed",
            Self::CommandTimedOut => "command.timed_out",
            Self::CommandCancelled => "command.cancelled",
        }
    }

    /// The event a final command status raises; `None` for statuses that are not final.
    pub fn of(status: CommandStatus) -> Option<Self> {
        match status {
            CommandStatus::Succeeded => Some(Self::CommandSucceeded),
            CommandStatus::Failed => Some(Self::CommandFailed),
            CommandStatus::TimedOut => Some(Self::CommandTimedOut),
            CommandStatus::Cancelled => Some(Self::CommandCancelled),
            CommandStatus::Queued | CommandStatus::Running => None,
        }
    }
}

/// The body of `POST /webhooks`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// Where deliveries are POSTed: an absolute http or https URL, at most 2048 characters.
    #[schema(max_length = 2048, pattern = "^https?://[^\\s/?#]+([/?#][^\\s]*)?$")]
    pub url: String,
    /// At most 500 characters.
    #[schema(max_length = 500)]
    pub description: Option<String>,
    /// The events to receive; absent means all four.
    pub events: Option<Vec<WebhookEvent>>,
    /// Default true.
    pub enabled: Option<bool>,
}

/// The body of `PATCH /webhooks/{id}`: absent fields stay as they are; `null` clears `description`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookChanges {
    #[schema(max_length = 2048, pattern = "^https?://[^\\s/?#]+([/?#][^\\s]*)?$")]
    pub url: Option<String>,
    #[serde(default, deserialize_with = "super::present")]
    #[schema(value_type = Option<String>, max_length = 500)]
    pub description: Option<Option<String>>,
    pub events: Option<Vec<WebhookEvent>>,
    pub enabled: Option<bool>,
}

/// A subscription: where to send which events. The secret is not part of it; it is shown once
/// at creation and otherwise only read by the dispatcher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Webhook {
    pub id: Uuid,
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub events: Vec<WebhookEvent>,
    /// A disabled webhook receives nothing new; deliveries already made stay listed.
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Webhook {
    /// Whether this webhook receives `event`: enabled, subscribed to it, and already there when
    /// it happened (a webhook receives only what happens after its creation).
    pub fn receives(&self, event: WebhookEvent, occurred_at: DateTime<Utc>) -> bool {
        self.enabled && self.events.contains(&event) && self.created_at <= occurred_at
    }
}

/// Longest accepted webhook URL.
pub const MAX_URL_CHARS: usize = 2048;

/// Checks a webhook URL: absolute http(s) with a host, and unless `allow_private`, not a literal
/// address outside the public internet. Names are checked again after DNS
/// resolution at every delivery, which is the check that counts; this one gives a clear error
/// early. Returns the URL as it will be stored.
pub fn check_url(raw: &str, allow_private: bool) -> Result<String, String> {
    if raw.len() > MAX_URL_CHARS {
        return Err(format!("must be at most {MAX_URL_CHARS} characters"));
    }
    let url = url::Url::parse(raw).map_err(|e| format!("is not an absolute URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must use http or https".into());
    }
    let private = match url.host() {
        None => return Err("must name a host".into()),
        Some(url::Host::Ipv4(ip)) => !is_public(ip.into()),
        Some(url::Host::Ipv6(ip)) => !is_public(ip.into()),
        // Names are checked where it counts: on the addresses they resolve to, at each delivery.
        Some(url::Host::Domain(_)) => false,
    };
    if private && !allow_private {
        return Err("is a loopback, private or link-local address, which webhooks may not reach \
             (the server allows it only with RDEV_WEBHOOK_ALLOW_PRIVATE=true)"
            .into());
    }
    Ok(url.to_string())
}

/// A webhook's signing secret, `whsec_` + base64 of 24 random bytes. Shown once at creation;
/// stored so deliveries can be signed; its `Debug` output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    pub const PREFIX: &'static str = "whsec_";
    const KEY_BYTES: usize = 24;

    pub fn generate() -> Self {
        let mut key = [0u8; Self::KEY_BYTES];
        rand::rng().fill(&mut key);
        Self(format!("{}{}", Self::PREFIX, BASE64.encode(key)))
    }

    /// A stored secret; `None` unless it is `whsec_` and valid base64.
    pub fn from_stored(raw: String) -> Option<Self> {
        let key = raw.strip_prefix(Self::PREFIX)?;
        BASE64.decode(key).ok().filter(|bytes| !bytes.is_empty())?;
        Some(Self(raw))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    fn key(&self) -> Vec<u8> {
        // `from_stored` and `generate` only ever hold valid base64 after the prefix.
        BASE64.decode(self.0.trim_start_matches(Self::PREFIX)).unwrap_or_default()
    }

    /// The `webhook-signature` header value for one delivery.
    pub fn sign(&self, message_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = <Hmac<Sha256>>::new_from_slice(&self.key())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(message_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(whsec_…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        // From the Standard Webhooks specification's test suite.
        let secret = WebhookSecret::from_stored("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()).unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_are_whsec_base64_and_hidden_from_debug() {
        let secret = WebhookSecret::generate();
        assert!(secret.expose().starts_with("whsec_"));
        assert_eq!(WebhookSecret::from_stored(secret.expose().to_owned()), Some(secret.clone()));
        assert!(WebhookSecret::from_stored("whsec_!!".into()).is_none());
        assert!(!format!("{secret:?}").contains(secret.expose()));
    }

    #[test]
    fn final_statuses_raise_their_event() {
        assert_eq!(WebhookEvent::of(CommandStatus::TimedOut), Some(WebhookEvent::CommandTimedOut));
        assert_eq!(WebhookEvent::of(CommandStatus::Running), None);
        assert_eq!(serde_json::to_string(&WebhookEvent::CommandCancelled).unwrap(), r#""command.cancelled""#);
    }
}
