//! Ports: the capabilities services need, as traits. Adapters implement them; services and the
//! HTTP layer hold them as `Arc<dyn Port>`, so Postgres or SQLite, local or Kubernetes, cached or
//! not, is decided once at wiring time (`app`) and tests can pass in-memory fakes.
//!
//! Every method reports failure as `DomainError`; no infrastructure error type crosses a port.
//! Ports use `#[async_trait]` because native async trait methods cannot be called through `dyn`.

pub mod apikeys;
pub mod audit;
pub mod clock;
pub mod executor;
pub mod files;
pub mod health;
pub mod idempotency;
pub mod output;
pub mod projects;
pub mod queue;
pub mod ratelimit;
pub mod sessions;
pub mod terminals;
pub mod webhooks;

pub use apikeys::{ApiKeyRepo, StoredKey};
pub use audit::{AuditLog, RanNow};
pub use clock::{Clock, SystemClock};
pub use executor::{Executor, KILLED_EXIT, Stop};
pub use files::{ByteStream, FileContent, FolderEntries, ProjectFiles, WriteRules};
pub use health::{HealthCheck, StorageStatus};
pub use idempotency::IdempotencyStore;
pub use output::{OutputChunk, OutputLog, OutputSink, Stream};
pub use projects::ProjectSource;
pub use queue::{CancelEffect, CommandQueue, Recovered, RecoveryAudit};
pub use ratelimit::{Grant, RateDecision, RateLimiter};
pub use sessions::{Acquired, SessionStore};
pub use terminals::{TERMINAL_OUTPUT_BACKLOG, TerminalHost, TerminalIo, TicketStore};
pub use webhooks::{DeliveryQueue, Redelivery, WebhookRepo, WebhookRequest, WebhookResponse, WebhookSender};
