//! `AuditLog`: entries stored durably, listed newest first through filters, purged by age.

use rdev_api::domain::{AuditEntry, AuditFilter, ProjectId, WebhookEvent};

use super::{database, entry, event, now, page, seconds, webhook};
use crate::{on_both_databases, support::Db};

on_both_databases!(entries_read_back_newest_first_through_filters_and_pages, purge_deletes_entries_before_a_time);

fn ids(entries: &[AuditEntry]) -> Vec<uuid::Uuid> {
    entries.iter().map(|e| e.id).collect()
}

async fn entries_read_back_newest_first_through_filters_and_pages(db: Db) {
    let log = database(db).await.audit_log();
    let t = now();
    let old = entry("alpha", t);
    let mut refused = entry("beta", t + seconds(1));
    refused.api_key_id = None;
    refused.client_ip = None;
    refused.exit_code = None;
    refused.duration_ms = None;
    refused.outcome = rdev_api::domain::AuditOutcome::Rejected;
    refused.reason = Some("FORBIDDEN: this key lacks the scope commands:execute".into());
    let new = entry("alpha", t + seconds(2));
    for e in [&old, &refused, &new] {
        log.record(e, None).await.unwrap();
    }
    let all = log.list(&AuditFilter::default(), &page(10, None)).await.unwrap();
    assert_eq!(all.items, [new.clone(), refused.clone(), old.clone()], "every field, newest first");

    let alpha = AuditFilter { project_id: Some(ProjectId::parse("alpha").unwrap()), ..Default::default() };
    assert_eq!(ids(&log.list(&alpha, &page(10, None)).await.unwrap().items), [new.id, old.id]);
    let by_key = AuditFilter { api_key_id: old.api_key_id, ..Default::default() };
    assert_eq!(ids(&log.list(&by_key, &page(10, None)).await.unwrap().items), [old.id]);
    let window = AuditFilter { since: Some(t + seconds(1)), until: Some(t + seconds(2)), ..Default::default() };
    assert_eq!(ids(&log.list(&window, &page(10, None)).await.unwrap().items), [refused.id], "since ≤ at < until");
    let rejected = AuditFilter { outcome: Some(rdev_api::domain::AuditOutcome::Rejected), ..Default::default() };
    assert_eq!(ids(&log.list(&rejected, &page(10, None)).await.unwrap().items), [refused.id]);

    let first = log.list(&AuditFilter::default(), &page(2, None)).await.unwrap();
    let rest = log.list(&AuditFilter::default(), &page(2, first.next_cursor.as_deref())).await.unwrap();
    assert_eq!((ids(&first.items), ids(&rest.items), rest.next_cursor), (vec![new.id, refused.id], vec![old.id], None));
}

async fn purge_deletes_entries_before_a_time(db: Db) {
    let database = database(db).await;
    let log = database.audit_log();
    let (hooks, _) = database.webhooks();
    let t = now();
    hooks.create(&webhook(&WebhookEvent::ALL, true, t), &rdev_api::domain::WebhookSecret::generate()).await.unwrap();
    let kept = entry("p", t + seconds(10));
    for e in [entry("p", t), entry("p", t + seconds(5)), kept.clone()] {
        log.record(&e, Some(&event(WebhookEvent::CommandSucceeded, e.at))).await.unwrap();
    }
    assert_eq!(log.purge(t + seconds(10)).await.unwrap(), 2);
    assert_eq!(log.list(&AuditFilter::default(), &page(10, None)).await.unwrap().items, [kept]);
    assert_eq!(log.purge(t + seconds(10)).await.unwrap(), 0);
}
