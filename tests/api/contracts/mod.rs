//! Contract tests: what each storage port promises, in the words of its trait, checked on every
//! adapter of it: SQLite in memory and a fresh Postgres database, and for `RateLimiter` and
//! `CommandQueue` the in-memory ones too (the limiter of the embedded setup, the queue fake the
//! service tests run on, which must not drift from the real ones). The API tests check behaviour end to end; these hold each adapter to its
//! port directly, so a new one (or a change to one) is judged by the same tests.

/// Generates, for each named `async fn name(adapter)`, `name::sqlite`, `name::postgres` and
/// `name::memory`, each given the adapter `$make(Some(db))` or `$make(None)` returns.
macro_rules! on_every_adapter {
    ($make:ident: $($name:ident),* $(,)?) => {$(
        mod $name {
            use crate::support::Db;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::$make(Some(Db::Sqlite)).await).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::$make(Some(Db::Postgres)).await).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                super::$name(super::$make(None).await).await
            }
        }
    )*};
}

mod audit;
mod deliveries;
mod idempotency;
mod keys;
mod queue;
mod ratelimit;
mod sessions;
mod webhooks;

use chrono::{DateTime, SubsecRound as _, Utc};
use rdev_api::{
    adapters::Database,
    domain::{
        AuditEntry, AuditOutcome, Caller, Delivery, DeliveryFilter, OutboxEvent, PageRequest, ProjectId, Webhook,
        WebhookEvent,
    },
    ports::WebhookRepo,
};

use crate::support::{Db, fresh_database};

/// A migrated database of `db` no other test uses: SQLite in memory, or a new Postgres database.
pub async fn database(db: Db) -> Database {
    let url = match db {
        Db::Sqlite => "sqlite::memory:".to_owned(),
        Db::Postgres => fresh_database(db, std::path::Path::new("")).await,
    };
    let database = Database::connect(&url, 4).await.expect("database opens");
    database.migrate().await.expect("migrations apply");
    database
}

/// Now, at the microsecond precision both databases store, so values read back compare equal.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

pub fn seconds(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

pub fn caller() -> Caller {
    Caller {
        api_key_id: Some(uuid::Uuid::new_v4()),
        request_id: "req-contract".into(),
        client_ip: Some("203.0.113.7".parse().expect("an address")),
    }
}

pub fn page(limit: u32, after: Option<&str>) -> PageRequest {
    PageRequest::parse(Some(limit), after).expect("a valid page")
}

/// A webhook of `events`, created at `created_at`.
pub fn webhook(events: &[WebhookEvent], enabled: bool, created_at: DateTime<Utc>) -> Webhook {
    Webhook {
        id: uuid::Uuid::new_v4(),
        url: format!("https://hooks.example.com/{}", uuid::Uuid::new_v4().simple()),
        description: Some("contract".into()),
        events: events.to_vec(),
        enabled,
        created_at,
        updated_at: created_at,
    }
}

/// An outbox event of `kind` that happened at `at`.
pub fn event(kind: WebhookEvent, at: DateTime<Utc>) -> OutboxEvent {
    let payload = serde_json::json!({"type": kind.as_str(), "data": {"n": 1}}).to_string();
    OutboxEvent { id: uuid::Uuid::new_v4(), event: kind, occurred_at: at, payload }
}

/// An audit entry of a command run at `at`.
pub fn entry(project: &str, at: DateTime<Utc>) -> AuditEntry {
    let caller = caller();
    AuditEntry {
        id: uuid::Uuid::new_v4(),
        at,
        request_id: caller.request_id,
        api_key_id: caller.api_key_id,
        client_ip: caller.client_ip,
        project_id: Some(ProjectId::parse(project).expect("a project id")),
        command: Some("make test".into()),
        exit_code: Some(0),
        outcome: AuditOutcome::Succeeded,
        duration_ms: Some(42),
        reason: None,
    }
}

/// Every delivery of a webhook, newest first.
pub async fn deliveries_of(hooks: &dyn WebhookRepo, webhook_id: uuid::Uuid) -> Vec<Delivery> {
    hooks.deliveries(webhook_id, &DeliveryFilter::default(), &page(100, None)).await.expect("deliveries").items
}

/// An audit entry for a command (of what a recovery took back).
pub fn entry_of(command: &rdev_api::domain::Command) -> AuditEntry {
    AuditEntry {
        id: uuid::Uuid::new_v4(),
        project_id: Some(command.project_id.clone()),
        command: Some(command.command.clone()),
        outcome: AuditOutcome::Error,
        exit_code: None,
        duration_ms: None,
        ..entry("p", now())
    }
}
