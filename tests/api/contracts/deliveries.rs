//! `DeliveryQueue`: outbox events fanned out to subscribers once, due deliveries leased to one
//! dispatcher, attempts recorded with what follows from them.

use rdev_api::domain::{
    AttemptVerdict, CommandEnd, DeliveryAttempt, DeliveryStatus, EnqueueRequest, ProjectId, WebhookEvent, WebhookSecret,
};

use super::{caller, database, deliveries_of, entry, event, now, seconds, webhook};
use crate::{on_both_databases, support::Db};

on_both_databases!(
    events_fan_out_once_to_each_enabled_subscriber_that_existed,
    due_deliveries_are_leased_to_one_dispatcher_and_retried_on_schedule,
    deliveries_of_a_disabled_webhook_wait_until_it_is_enabled,
    purge_deletes_finished_deliveries_and_keeps_pending_work,
    final_commands_put_their_event_in_the_outbox,
);

fn attempt(n: u32, status: u16, at: chrono::DateTime<chrono::Utc>) -> DeliveryAttempt {
    DeliveryAttempt { attempt: n, at, status_code: Some(status), latency_ms: 3, error: None, response_body: None }
}

async fn events_fan_out_once_to_each_enabled_subscriber_that_existed(db: Db) {
    let database = database(db).await;
    let (hooks, deliveries) = database.webhooks();
    let t = now();
    let both = webhook(&[WebhookEvent::CommandSucceeded, WebhookEvent::CommandFailed], true, t - seconds(10));
    let other_event = webhook(&[WebhookEvent::CommandFailed], true, t - seconds(10));
    let disabled = webhook(&[WebhookEvent::CommandSucceeded], false, t - seconds(10));
    let too_late = webhook(&[WebhookEvent::CommandSucceeded], true, t + seconds(5));
    for w in [&both, &other_event, &disabled, &too_late] {
        hooks.create(w, &WebhookSecret::generate()).await.unwrap();
    }
    assert_eq!(deliveries.next_due(t).await.unwrap(), None, "nothing pending");
    let happened = event(WebhookEvent::CommandSucceeded, t);
    database.audit_log().record(&entry("p", t), Some(&happened)).await.unwrap();
    assert_eq!(deliveries.next_due(t + seconds(6)).await.unwrap(), Some(t + seconds(6)), "an event waits");

    assert_eq!(deliveries.fan_out(3, t + seconds(6), 100).await.unwrap(), 1);
    assert_eq!(deliveries.fan_out(3, t + seconds(6), 100).await.unwrap(), 0, "each event once");
    let made = deliveries_of(&*hooks, both.id).await;
    assert_eq!(made.len(), 1);
    assert_eq!(
        (made[0].event_id, made[0].event, made[0].status),
        (happened.id, happened.event, DeliveryStatus::Pending)
    );
    assert_eq!(made[0].next_attempt_at, Some(t + seconds(6)), "due at once");
    for w in [&other_event, &disabled, &too_late] {
        assert!(deliveries_of(&*hooks, w.id).await.is_empty(), "{} receives nothing", w.url);
    }
}

async fn due_deliveries_are_leased_to_one_dispatcher_and_retried_on_schedule(db: Db) {
    let database = database(db).await;
    let (hooks, deliveries) = database.webhooks();
    let t = now();
    let hook = webhook(&WebhookEvent::ALL, true, t);
    let secret = WebhookSecret::generate();
    hooks.create(&hook, &secret).await.unwrap();
    let happened = event(WebhookEvent::CommandFailed, t);
    database.audit_log().record(&entry("p", t), Some(&happened)).await.unwrap();
    deliveries.fan_out(2, t, 100).await.unwrap();

    let claimed = deliveries.claim("d1", t, t + seconds(60), 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let due = &claimed[0];
    assert_eq!((due.webhook_id, due.url.as_str(), due.secret.expose()), (hook.id, hook.url.as_str(), secret.expose()));
    assert_eq!((due.event, due.payload.as_str()), (happened.event, happened.payload.as_str()));
    assert_eq!((due.attempt, due.max_attempts), (1, 2));
    assert!(deliveries.claim("d2", t, t + seconds(60), 10).await.unwrap().is_empty(), "leased to d1");
    assert_eq!(deliveries.next_due(t).await.unwrap(), Some(t + seconds(60)), "when the lease runs out");

    let taken_over = deliveries.claim("d2", t + seconds(61), t + seconds(120), 10).await.unwrap();
    assert_eq!(taken_over.iter().map(|d| (d.id, d.attempt)).collect::<Vec<_>>(), [(due.id, 1)], "lease ran out");
    assert!(!deliveries.record(due.id, "d1", &attempt(1, 500, t), AttemptVerdict::GaveUp).await.unwrap(), "d1 lost it");
    let retry_at = t + seconds(100);
    let first = attempt(1, 500, t + seconds(61));
    assert!(deliveries.record(due.id, "d2", &first, AttemptVerdict::RetryAt(retry_at)).await.unwrap());
    let listed = deliveries_of(&*hooks, hook.id).await;
    assert_eq!((listed[0].status, listed[0].attempt_count), (DeliveryStatus::Pending, 1));
    assert_eq!((listed[0].next_attempt_at, listed[0].attempts.clone()), (Some(retry_at), vec![first.clone()]));

    assert!(deliveries.claim("d1", retry_at - seconds(1), retry_at + seconds(60), 10).await.unwrap().is_empty());
    let second = deliveries.claim("d1", retry_at, retry_at + seconds(60), 10).await.unwrap();
    assert_eq!(second[0].attempt, 2);
    let last = attempt(2, 404, retry_at);
    assert!(deliveries.record(due.id, "d1", &last, AttemptVerdict::GaveUp).await.unwrap());
    let listed = deliveries_of(&*hooks, hook.id).await;
    assert_eq!(
        (listed[0].status, listed[0].delivered_at, listed[0].next_attempt_at),
        (DeliveryStatus::Failed, None, None)
    );
    assert_eq!(listed[0].attempts, [first, last]);
    assert_eq!(deliveries.next_due(retry_at).await.unwrap(), None);
}

async fn deliveries_of_a_disabled_webhook_wait_until_it_is_enabled(db: Db) {
    let database = database(db).await;
    let (hooks, deliveries) = database.webhooks();
    let t = now();
    let hook = webhook(&WebhookEvent::ALL, true, t);
    hooks.create(&hook, &WebhookSecret::generate()).await.unwrap();
    database.audit_log().record(&entry("p", t), Some(&event(WebhookEvent::CommandFailed, t))).await.unwrap();
    deliveries.fan_out(3, t, 100).await.unwrap();

    let disabled = rdev_api::domain::Webhook { enabled: false, ..hook.clone() };
    hooks.update(&disabled).await.unwrap();
    assert!(deliveries.claim("d1", t, t + seconds(60), 10).await.unwrap().is_empty());
    assert_eq!(deliveries.next_due(t).await.unwrap(), None, "nothing due while disabled");
    hooks.update(&hook).await.unwrap();
    assert_eq!(deliveries.claim("d1", t, t + seconds(60), 10).await.unwrap().len(), 1);
}

async fn purge_deletes_finished_deliveries_and_keeps_pending_work(db: Db) {
    let database = database(db).await;
    let (hooks, deliveries) = database.webhooks();
    let t = now();
    let (a, b) = (webhook(&WebhookEvent::ALL, true, t), webhook(&WebhookEvent::ALL, true, t));
    for w in [&a, &b] {
        hooks.create(w, &WebhookSecret::generate()).await.unwrap();
    }
    database.audit_log().record(&entry("p", t), Some(&event(WebhookEvent::CommandSucceeded, t))).await.unwrap();
    deliveries.fan_out(3, t, 100).await.unwrap();
    for due in deliveries.claim("d1", t, t + seconds(60), 10).await.unwrap() {
        let verdict =
            if due.webhook_id == a.id { AttemptVerdict::Delivered } else { AttemptVerdict::RetryAt(t + seconds(500)) };
        assert!(deliveries.record(due.id, "d1", &attempt(1, 200, t + seconds(1)), verdict).await.unwrap());
    }
    let delivered = deliveries_of(&*hooks, a.id).await;
    assert_eq!((delivered[0].status, delivered[0].delivered_at), (DeliveryStatus::Succeeded, Some(t + seconds(1))));

    assert_eq!(deliveries.purge(t).await.unwrap(), 0, "nothing created before t");
    assert_eq!(deliveries.purge(t + seconds(1000)).await.unwrap(), 1);
    assert!(deliveries_of(&*hooks, a.id).await.is_empty());
    assert_eq!(deliveries_of(&*hooks, b.id).await.len(), 1, "pending work is never purged");
    assert_eq!(deliveries.next_due(t + seconds(2)).await.unwrap(), Some(t + seconds(500)));
}

async fn final_commands_put_their_event_in_the_outbox(db: Db) {
    let database = database(db).await;
    let (hooks, deliveries) = database.webhooks();
    let queue = database.command_queue();
    let t = now();
    let hook = webhook(&WebhookEvent::ALL, true, t - seconds(1));
    hooks.create(&hook, &WebhookSecret::generate()).await.unwrap();
    let new = |priority| {
        let request = EnqueueRequest {
            command: "true".into(),
            timeout_secs: None,
            workdir: None,
            env: None,
            priority: Some(priority),
            max_attempts: None,
            max_output_bytes: None,
            stdin: None,
            stdin_base64: None,
        };
        rdev_api::domain::Command::new(
            request,
            ProjectId::parse("p").unwrap(),
            caller(),
            crate::support::command_defaults(5),
            t,
        )
        .unwrap()
    };
    let (finished, cancelled, lost) = (new(9), new(5), new(1));
    for c in [&finished, &cancelled, &lost] {
        queue.enqueue(c).await.unwrap();
    }
    queue.claim("w", t + seconds(30), chrono::Utc::now(), &[]).await.unwrap();
    queue.finish(finished.id, "w", &CommandEnd::Error("gone".into()), t, &super::entry("p", t)).await.unwrap();
    queue.cancel(cancelled.id, t).await.unwrap();
    queue.claim("w", t + seconds(30), chrono::Utc::now(), &[]).await.unwrap();
    queue.start(lost.id, "w", t).await.unwrap();
    queue.recover_expired(t + seconds(31), &|r| super::entry_of(r.command())).await.unwrap();

    assert_eq!(deliveries.fan_out(3, t + seconds(31), 100).await.unwrap(), 3);
    let made = deliveries_of(&*hooks, hook.id).await;
    let mut events: Vec<_> = made.iter().map(|d| d.event.as_str()).collect();
    events.sort();
    assert_eq!(events, ["command.cancelled", "command.failed", "command.failed"]);
}
