//! Business rules, written against ports only: no HTTP, SQL or process handling here.

pub mod apikeys;
pub mod audit;
pub mod commands;
pub mod dispatcher;
pub mod files;
pub mod follow;
pub mod idempotency;
pub mod key_watch;
pub mod output;
pub mod projects;
pub mod queue;
pub mod ratelimit;
pub mod seats;
pub mod sessions;
pub mod terminals;
pub mod usage;
pub mod webhooks;
pub mod worker;

pub use apikeys::{ApiKeyService, Authenticated};
pub use audit::AuditService;
pub use commands::{CommandService, CommandStores, KeyBounds, PreparedShell};
pub use dispatcher::{DispatchSettings, DispatchWake, WebhookDispatcher};
pub use files::FileService;
pub use follow::FollowLimits;
pub use idempotency::{Begun, IdempotencyService, KeyedRequest, Reservation};
pub use key_watch::{Credential, Deadline, KeyHold, KeyWatch};
pub use output::{Followed, FollowedBy, KeptOutput, OpenRun, OutputService, OutputWriter, Unwritten};
pub use projects::ProjectService;
pub use queue::{Cancelled, QueueService};
pub use ratelimit::RateLimitService;
pub use seats::{KeySeat, KeySeats};
pub use sessions::{Owner, SessionService};
pub use terminals::{OpenedTerminal, TerminalLimits, TerminalService};
pub use usage::UsageTracker;
pub use webhooks::WebhookService;
pub use worker::{QueueWorker, RunningCommands};
