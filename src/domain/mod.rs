//! The domain: plain types, their validation rules and the domain error.
//!
//! Nothing here knows about HTTP, databases, Kubernetes or processes: no axum, sqlx, kube,
//! reqwest or `tokio::process`. Every other layer depends on this one, never the reverse.

pub mod address;
pub mod apikey;
pub mod audit;
pub mod command;
pub mod delivery;
pub mod error;
pub mod execution;
pub mod files;
pub mod idempotency;
pub mod output;
pub mod page;
pub mod project;
pub mod quota;
pub mod session;
pub mod terminal;
pub mod webhook;

pub use apikey::{ApiKey, ApiKeyChanges, ApiKeySecret, KeyHash, NewApiKey, RotateRequest, Scope};
pub use audit::{AuditEntry, AuditFilter, AuditOutcome, Caller};
pub use command::{Command, CommandEnd, CommandFilter, CommandOrigin, CommandReader, CommandStatus, EnqueueRequest};
pub use delivery::{
    AttemptVerdict, Delivery, DeliveryAttempt, DeliveryFilter, DeliveryStatus, DueDelivery, OutboxEvent,
};
pub use error::{DomainError, FieldErrors, Unauthenticated};
pub use execution::{CommandDefaults, CommandSpec, ExecOutcome, Execution, ShellRequest};
pub use files::{FileEntry, FileListing, FileType, FolderPage, IfMatch, PageKeeper, ProjectPath, WrittenFile};
pub use idempotency::{IDEMPOTENCY_KEY_RETENTION, IdempotencyKey, KeyRecord, StoredReply, fingerprint};
pub use output::{EntryKind, KeptStream, MIN_OUTPUT_BYTES, Omitted, OutputEntry, OutputRecorder, Stream, TailSnapshot};
pub use page::{Page, PageRequest};
pub use project::{ExecutorKind, Project, ProjectId, ProjectStatus};
pub use quota::{KeyQuotas, Quota, Quotas};
pub use session::{
    CreateSessionRequest, Session, SessionEnd, SessionExecution, SessionFilter, SessionState, ShellState,
};
pub use terminal::{
    ControlFrame, IssuedTicket, StoredTicket, TerminalEnding, TerminalInput, TerminalSize, TerminalSummary,
    TicketSecret,
};
pub use webhook::{NewWebhook, Webhook, WebhookChanges, WebhookEvent, WebhookSecret};

/// For the `PATCH` bodies: tells a field sent as `null` (`Some(None)`) from one not sent at all
/// (`None`).
pub(crate) fn present<'de, T: serde::Deserialize<'de>, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}
