//! `WebhookRepo`: subscriptions, and the deliveries the API lists and retries by hand.

use rdev_api::{
    domain::{AttemptVerdict, DeliveryAttempt, DeliveryFilter, DeliveryStatus, WebhookEvent, WebhookSecret},
    ports::Redelivery,
};

use super::{database, deliveries_of, entry, event, now, page, seconds, webhook};
use crate::{on_both_databases, support::Db};

on_both_databases!(
    webhooks_read_back_change_and_list_oldest_first,
    deleting_a_webhook_deletes_its_deliveries,
    a_redelivery_makes_a_delivery_due_again_unless_in_flight,
);

fn failed_attempt(attempt: u32, at: chrono::DateTime<chrono::Utc>) -> DeliveryAttempt {
    DeliveryAttempt {
        attempt,
        at,
        status_code: Some(503),
        latency_ms: 7,
        error: None,
        response_body: Some("busy".into()),
    }
}

async fn webhooks_read_back_change_and_list_oldest_first(db: Db) {
    let (hooks, _) = database(db).await.webhooks();
    let t = now();
    let first = webhook(&[WebhookEvent::CommandFailed], true, t);
    let second = webhook(&WebhookEvent::ALL, false, t + seconds(1));
    for w in [&first, &second] {
        hooks.create(w, &WebhookSecret::generate()).await.unwrap();
    }
    assert_eq!(hooks.get(first.id).await.unwrap().as_ref(), Some(&first));
    assert_eq!(hooks.get(uuid::Uuid::new_v4()).await.unwrap(), None);
    let listed = hooks.list(&page(1, None)).await.unwrap();
    let rest = hooks.list(&page(1, listed.next_cursor.as_deref())).await.unwrap();
    assert_eq!((listed.items, rest.items.clone()), (vec![first.clone()], vec![second.clone()]));

    let mut changed = second.clone();
    changed.url = "https://elsewhere.example.com/hook".into();
    changed.description = None;
    changed.events = vec![WebhookEvent::CommandTimedOut];
    changed.enabled = true;
    changed.updated_at = t + seconds(9);
    assert!(hooks.update(&changed).await.unwrap());
    assert_eq!(hooks.get(second.id).await.unwrap(), Some(changed.clone()));
    assert!(!hooks.update(&rdev_api::domain::Webhook { id: uuid::Uuid::new_v4(), ..changed }).await.unwrap());
}

async fn deleting_a_webhook_deletes_its_deliveries(db: Db) {
    let database = database(db).await;
    let (hooks, deliveries) = database.webhooks();
    let t = now();
    let hook = webhook(&WebhookEvent::ALL, true, t);
    hooks.create(&hook, &WebhookSecret::generate()).await.unwrap();
    let e = entry("p", t);
    database.audit_log().record(&e, Some(&event(WebhookEvent::CommandSucceeded, t))).await.unwrap();
    assert_eq!(deliveries.fan_out(3, t, 100).await.unwrap(), 1);
    let claimed = deliveries.claim("d1", t, t + seconds(60), 10).await.unwrap();
    assert_eq!(claimed.len(), 1);

    assert!(hooks.delete(hook.id).await.unwrap());
    assert!(!hooks.delete(hook.id).await.unwrap());
    assert_eq!(hooks.get(hook.id).await.unwrap(), None);
    assert!(deliveries_of(&*hooks, hook.id).await.is_empty());
    let recorded = deliveries.record(claimed[0].id, "d1", &failed_attempt(1, t), AttemptVerdict::GaveUp).await;
    assert!(!recorded.unwrap(), "an attempt of a deleted webhook is not recorded");
    assert_eq!(deliveries.next_due(t).await.unwrap(), None);
}

async fn a_redelivery_makes_a_delivery_due_again_unless_in_flight(db: Db) {
    let database = database(db).await;
    let (hooks, deliveries) = database.webhooks();
    let t = now();
    let hook = webhook(&WebhookEvent::ALL, true, t);
    hooks.create(&hook, &WebhookSecret::generate()).await.unwrap();
    for n in 0..2 {
        let e = entry("p", t + seconds(n));
        database.audit_log().record(&e, Some(&event(WebhookEvent::CommandFailed, e.at))).await.unwrap();
    }
    deliveries.fan_out(1, t + seconds(2), 100).await.unwrap();
    let listed = deliveries_of(&*hooks, hook.id).await;
    assert_eq!(listed.len(), 2);
    assert!(
        listed.iter().all(|d| d.status == DeliveryStatus::Pending && d.attempt_count == 0 && d.attempts.is_empty())
    );

    let claimed = deliveries.claim("d1", t + seconds(2), t + seconds(60), 1).await.unwrap();
    let id = claimed[0].id;
    assert_eq!(hooks.redeliver(hook.id, id, t + seconds(3)).await.unwrap(), Some(Redelivery::InFlight));
    assert!(deliveries.record(id, "d1", &failed_attempt(1, t + seconds(3)), AttemptVerdict::GaveUp).await.unwrap());

    let failed = DeliveryFilter { status: Some(DeliveryStatus::Failed) };
    let gave_up = hooks.deliveries(hook.id, &failed, &page(10, None)).await.unwrap().items;
    assert_eq!(gave_up.len(), 1);
    assert_eq!((gave_up[0].id, gave_up[0].attempt_count), (id, 1));
    assert_eq!(gave_up[0].attempts, [failed_attempt(1, t + seconds(3))], "the attempt as recorded");

    let Some(Redelivery::Scheduled(again)) = hooks.redeliver(hook.id, id, t + seconds(4)).await.unwrap() else {
        panic!("a finished delivery is scheduled again");
    };
    assert_eq!((again.status, again.next_attempt_at), (DeliveryStatus::Pending, Some(t + seconds(4))));
    let retried = deliveries.claim("d2", t + seconds(4), t + seconds(60), 10).await.unwrap();
    let retried: Vec<_> = retried.iter().filter(|d| d.id == id).collect();
    assert_eq!((retried[0].attempt, retried[0].max_attempts), (2, 2), "room for one more attempt");

    assert_eq!(hooks.redeliver(hook.id, uuid::Uuid::new_v4(), t).await.unwrap(), None);
    assert_eq!(hooks.redeliver(uuid::Uuid::new_v4(), id, t).await.unwrap(), None, "another webhook's delivery");
}
