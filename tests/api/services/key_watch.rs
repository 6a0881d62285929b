//! The key watch: holds end when their key is revoked (here or in the database another replica
//! wrote), when its deadline passes, and stop being watched when dropped.

use std::time::Duration;

use chrono::Utc;
use rdev_api::{
    domain::{ApiKey, Scope, Unauthenticated},
    services::{Credential, Deadline},
};
use uuid::Uuid;

use super::QueueRig;

pub(super) fn key() -> ApiKey {
    ApiKey {
        id: Uuid::new_v4(),
        name: "watched".into(),
        prefix: "rdev_watch".into(),
        scopes: vec![Scope::CommandsExecute],
        allowed_ips: vec![],
        rate_limit_per_minute: None,
        quotas: Default::default(),
        expires_at: None,
        created_at: Utc::now(),
        last_used_at: None,
        revoked_at: None,
    }
}

/// Resolves `ended` within a second, or fails the test.
async fn ends(hold: &rdev_api::services::KeyHold) -> Unauthenticated {
    tokio::time::timeout(Duration::from_secs(1), hold.ended()).await.expect("the hold ended")
}

#[tokio::test]
async fn a_key_revoked_in_the_database_ends_its_holds_at_the_next_sweep() {
    let rig = QueueRig::new();
    let mut key = key();
    rig.keys.put(key.clone());
    let credential = Credential { key_id: key.id, hash: None };
    let hold = rig.watch.hold(Some(&credential), None);
    rig.watch.sweep().await;
    assert!(tokio::time::timeout(Duration::from_millis(20), hold.ended()).await.is_err(), "a usable key's hold ends");

    key.revoked_at = Some(rdev_api::ports::Clock::now(&*rig.clock));
    rig.keys.put(key);
    rig.watch.sweep().await;
    assert_eq!(ends(&hold).await, Unauthenticated::Revoked);
}

#[tokio::test]
async fn end_now_ends_every_hold_of_the_key_and_no_other() {
    let rig = QueueRig::new();
    let (revoked, other) = (key(), key());
    let first = rig.watch.hold(Some(&Credential { key_id: revoked.id, hash: None }), None);
    let second = rig.watch.hold(Some(&Credential { key_id: revoked.id, hash: None }), None);
    let bystander = rig.watch.hold(Some(&Credential { key_id: other.id, hash: None }), None);
    rig.watch.end_now(revoked.id, Unauthenticated::Revoked);
    assert_eq!(ends(&first).await, Unauthenticated::Revoked);
    assert_eq!(ends(&second).await, Unauthenticated::Revoked);
    assert!(tokio::time::timeout(Duration::from_millis(20), bystander.ended()).await.is_err());
}

#[tokio::test]
async fn a_deadline_ends_the_hold_without_a_sweep() {
    let rig = QueueRig::new();
    let key = key();
    let at = rdev_api::ports::Clock::now(&*rig.clock) + chrono::Duration::milliseconds(50);
    let hold = rig
        .watch
        .hold(Some(&Credential { key_id: key.id, hash: None }), Some(Deadline { at, why: Unauthenticated::Expired }));
    assert_eq!(ends(&hold).await, Unauthenticated::Expired);
}

#[tokio::test]
async fn a_dropped_hold_is_no_longer_watched_and_unbounded_never_ends() {
    let rig = QueueRig::new();
    let key = key();
    let credential = Credential { key_id: key.id, hash: None };
    let (first, second) = (rig.watch.hold(Some(&credential), None), rig.watch.hold(Some(&credential), None));
    assert_eq!(rig.watch.held(), 1, "two holds of one credential are one watched credential");
    drop(first);
    assert_eq!(rig.watch.held(), 1);
    drop(second);
    assert_eq!(rig.watch.held(), 0, "nothing holds the credential: the sweep reads nothing");
    let unbounded = rig.watch.hold(None, None);
    assert!(tokio::time::timeout(Duration::from_millis(20), unbounded.ended()).await.is_err());
}
