//! `WebhookDispatcher`: every due delivery is signed and sent, failures come back on the
//! schedule until one succeeds or the attempts run out, and no more than `concurrency` are in
//! flight at once.

use std::{sync::Arc, sync::atomic::Ordering, time::Duration};

use rdev_api::{
    domain::{AttemptVerdict, WebhookSecret},
    services::{DispatchSettings, DispatchWake, WebhookDispatcher},
};
use tokio::{sync::watch, task::JoinHandle};

use crate::support::fakes::{MemoryDeliveries, ScriptedSender};

struct Rig {
    deliveries: Arc<MemoryDeliveries>,
    sender: Arc<ScriptedSender>,
    stop: watch::Sender<bool>,
    dispatcher: JoinHandle<()>,
}

/// A dispatcher over fakes, the clock the real one; `retry_schedule` as given.
fn dispatch(sender: ScriptedSender, retry_schedule: &[u64], concurrency: usize, deliveries: MemoryDeliveries) -> Rig {
    let deliveries = Arc::new(deliveries);
    let sender = Arc::new(sender);
    let stop = watch::Sender::new(false);
    let dispatcher = WebhookDispatcher {
        name: "dispatcher-1".into(),
        queue: deliveries.clone(),
        sender: sender.clone(),
        clock: Arc::new(rdev_api::ports::SystemClock),
        settings: DispatchSettings {
            retry_schedule: retry_schedule.iter().map(|s| Duration::from_secs(*s)).collect(),
            timeout: Duration::from_secs(5),
            concurrency,
        },
        wake: DispatchWake::default(),
    };
    let dispatcher = tokio::spawn(dispatcher.run(stop.subscribe()));
    Rig { deliveries, sender, stop, dispatcher }
}

#[tokio::test]
async fn a_due_delivery_goes_out_once_signed_with_a_stable_message_id() {
    let secret = WebhookSecret::generate();
    let deliveries = MemoryDeliveries::default();
    let id = deliveries.add(&secret, 3, chrono::Utc::now());
    let rig = dispatch(ScriptedSender::answering(&[]), &[5, 60], 4, deliveries);
    rig.deliveries.wait_all_ended().await;

    assert_eq!(rig.deliveries.verdicts(id), [AttemptVerdict::Delivered]);
    let sent = rig.sender.sent.read(|sent| sent[0].clone());
    assert_eq!(rig.sender.count(), 1);
    let header = |name: &str| sent.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone()).unwrap();
    assert_eq!(header("webhook-id"), rdev_api::domain::Delivery::message_id(id));
    assert_eq!(header("content-type"), "application/json");
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in &sent.headers {
        headers.insert(*name, value.parse().unwrap());
    }
    let verifier = standardwebhooks::Webhook::new(secret.expose()).unwrap();
    verifier.verify(sent.body.as_bytes(), &headers).expect("a valid Standard Webhooks signature");
    assert!(sent.body.contains(&id.to_string()), "the event's payload as stored");
    rig.stop().await;
}

impl Rig {
    /// Stops the dispatcher and waits until it has (attempts in flight finish first).
    async fn stop(self) {
        self.stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(10), self.dispatcher).await.expect("it stops").expect("no panic");
    }
}

#[tokio::test]
async fn failures_are_retried_until_one_succeeds() {
    let deliveries = MemoryDeliveries::default();
    let id = deliveries.add(&WebhookSecret::generate(), 3, chrono::Utc::now());
    // A 500, then no answer at all, then a 200; the schedule waits nothing.
    let rig = dispatch(ScriptedSender::answering(&[500, 0, 200]), &[0, 0], 1, deliveries);
    rig.deliveries.wait_all_ended().await;
    let verdicts = rig.deliveries.verdicts(id);
    assert!(
        matches!(verdicts[..], [AttemptVerdict::RetryAt(_), AttemptVerdict::RetryAt(_), AttemptVerdict::Delivered]),
        "{verdicts:?}"
    );
    let numbers =
        rig.deliveries.state.read(|slots| slots[0].attempts.iter().map(|(a, _)| a.attempt).collect::<Vec<_>>());
    assert_eq!(numbers, [1, 2, 3]);
    rig.stop().await;
}

#[tokio::test]
async fn a_delivery_gives_up_when_its_attempts_run_out() {
    let deliveries = MemoryDeliveries::default();
    let id = deliveries.add(&WebhookSecret::generate(), 2, chrono::Utc::now());
    let rig = dispatch(ScriptedSender::answering(&[503, 404, 200]), &[0], 1, deliveries);
    rig.deliveries.wait_all_ended().await;
    assert!(matches!(rig.deliveries.verdicts(id)[..], [AttemptVerdict::RetryAt(_), AttemptVerdict::GaveUp]));
    assert_eq!(rig.sender.count(), 2, "no third attempt");
    rig.stop().await;
}

#[tokio::test]
async fn a_retry_waits_its_step_of_the_schedule_with_bounded_jitter() {
    let deliveries = MemoryDeliveries::default();
    let id = deliveries.add(&WebhookSecret::generate(), 3, chrono::Utc::now());
    let rig = dispatch(ScriptedSender::answering(&[500]), &[60, 600], 1, deliveries);
    rig.deliveries.wait_attempts(id, 1).await;
    let (attempt, verdict) = rig.deliveries.state.read(|slots| slots[0].attempts[0].clone());
    let AttemptVerdict::RetryAt(at) = verdict else { panic!("a retry: {verdict:?}") };
    let wait = (at - attempt.at).num_milliseconds();
    assert!((48_000..=72_100).contains(&wait), "60 s ± 20 %: {wait} ms");
    assert_eq!(attempt.status_code, Some(500));
    rig.stop().await;
}

#[tokio::test]
async fn no_more_than_the_concurrency_are_in_flight_and_stopping_lets_them_finish() {
    let deliveries = MemoryDeliveries::default();
    let ids: Vec<_> = (0..5).map(|_| deliveries.add(&WebhookSecret::generate(), 1, chrono::Utc::now())).collect();
    let rig = dispatch(ScriptedSender::default().gated(), &[], 2, deliveries);
    rig.sender.sent.wait_until("two requests in flight", |sent| sent.len() == 2).await;
    rig.sender.let_through(3);
    rig.sender.sent.wait_until("all five sent", |sent| sent.len() == 5).await;
    assert_eq!(rig.sender.most_in_flight.load(Ordering::SeqCst), 2);

    // Two are held now; stopping waits for them.
    let sender = rig.sender.clone();
    let deliveries = rig.deliveries.clone();
    let stopped = tokio::spawn(rig.stop());
    sender.let_through(2);
    stopped.await.unwrap();
    for id in ids {
        assert_eq!(deliveries.verdicts(id), [AttemptVerdict::Delivered]);
    }
}
