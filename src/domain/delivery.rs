//! Webhook deliveries: the event a finished command raises (written to the outbox with the
//! command's final state), one delivery of it per subscribed webhook, and every attempt made.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Command, Execution, WebhookEvent, WebhookSecret};

/// Most bytes of `stdout` and of `stderr` a payload carries; the full output stays in the API.
pub const PAYLOAD_OUTPUT_BYTES: usize = 4096;

/// An event waiting in the outbox: the exact JSON body every subscriber will receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    pub id: Uuid,
    pub event: WebhookEvent,
    pub occurred_at: DateTime<Utc>,
    /// `{"type","timestamp","data"}`, serialized once so every attempt signs the same bytes.
    pub payload: String,
}

impl OutboxEvent {
    /// The event of a queued command that reached a final status; `None` before that.
    pub fn for_command(command: &Command) -> Option<Self> {
        let event = WebhookEvent::of(command.status)?;
        let at = command.finished_at.unwrap_or(command.created_at);
        Some(Self::new(event, at, serde_json::to_value(command).unwrap_or(Value::Null)))
    }

    /// The event of a command run now (`POST /projects/{id}/shell`).
    pub fn for_execution(execution: &Execution) -> Option<Self> {
        let status = super::CommandStatus::of_exit(execution.exit_code, execution.timed_out);
        let event = WebhookEvent::of(status)?;
        Some(Self::new(event, execution.finished_at, serde_json::to_value(execution).unwrap_or(Value::Null)))
    }

    fn new(event: WebhookEvent, occurred_at: DateTime<Utc>, mut data: Value) -> Self {
        cap_output(&mut data);
        let payload = json!({
            "type": event.as_str(),
            "timestamp": occurred_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            "data": data,
        });
        Self { id: Uuid::new_v4(), event, occurred_at, payload: payload.to_string() }
    }
}

/// Cuts `stdout` and `stderr` to `PAYLOAD_OUTPUT_BYTES` (on a character boundary) and marks
/// what was cut as `*_truncated`.
fn cap_output(data: &mut Value) {
    let Some(fields) = data.as_object_mut() else { return };
    for stream in ["stdout", "stderr"] {
        let Some(Value::String(text)) = fields.get_mut(stream) else { continue };
        if text.len() > PAYLOAD_OUTPUT_BYTES {
            let mut end = PAYLOAD_OUTPUT_BYTES;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            fields.insert(format!("{stream}_truncated"), Value::Bool(true));
        }
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Not delivered yet; `next_attempt_at` says when the next attempt is due.
    Pending,
    Succeeded,
    /// Every attempt failed; `POST …/retry` tries again.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Pending, Self::Succeeded, Self::Failed].into_iter().find(|s| s.as_str() == raw)
    }
}

/// One try at sending a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct DeliveryAttempt {
    /// 1 for the first attempt.
    pub attempt: u32,
    pub at: DateTime<Utc>,
    /// The receiver's HTTP status; absent when no response came (refused, timeout, unreachable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    pub latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The first bytes of the receiver's response body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_body: Option<String>,
}

impl DeliveryAttempt {
    pub fn succeeded(&self) -> bool {
        self.status_code.is_some_and(|code| (200..300).contains(&code))
    }
}

/// One event on its way to one webhook, with every attempt so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Delivery {
    /// Also the `webhook-id` header of every attempt, so receivers can deduplicate.
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub event_id: Uuid,
    pub event: WebhookEvent,
    pub status: DeliveryStatus,
    pub attempt_count: u32,
    /// When the next attempt is due (pending deliveries only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<DateTime<Utc>>,
    /// Oldest first.
    pub attempts: Vec<DeliveryAttempt>,
}

impl Delivery {
    /// The `webhook-id` header: the same for every attempt of this delivery.
    pub fn message_id(id: Uuid) -> String {
        format!("msg_{}", id.simple())
    }
}

/// A delivery a dispatcher has claimed: everything needed to send it once.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub url: String,
    pub secret: WebhookSecret,
    pub event: WebhookEvent,
    pub payload: String,
    /// The trace the command ran in, if it was traced, so the delivery's span joins it.
    pub traceparent: Option<String>,
    /// The number this attempt will have (1 for the first).
    pub attempt: u32,
    pub max_attempts: u32,
}

/// What a dispatcher decided after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptVerdict {
    Delivered,
    RetryAt(DateTime<Utc>),
    GaveUp,
}

/// Filters for `GET /webhooks/{id}/deliveries`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryFilter {
    pub status: Option<DeliveryStatus>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_cap_output_on_a_character_boundary() {
        let mut data = json!({"stdout": "é".repeat(PAYLOAD_OUTPUT_BYTES), "stderr": "short"});
        cap_output(&mut data);
        let stdout = data["stdout"].as_str().unwrap();
        assert!(stdout.len() <= PAYLOAD_OUTPUT_BYTES && stdout.len() > PAYLOAD_OUTPUT_BYTES - 2);
        assert_eq!(data["stdout_truncated"], true);
        assert_eq!(data["stderr"], "short");
        assert!(data.get("stderr_truncated").is_none());
    }

    #[test]
    fn message_ids_are_stable_per_delivery() {
        let id = Uuid::new_v4();
        assert_eq!(Delivery::message_id(id), Delivery::message_id(id));
        assert!(Delivery::message_id(id).starts_with("msg_"));
    }
}
