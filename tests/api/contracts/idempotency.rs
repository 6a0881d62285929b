//! `IdempotencyStore`: one holder per key across callers, answers kept for the repeats, locks
//! that run out, keys forgotten after their retention.

use rdev_api::domain::{KeyRecord, StoredReply};
use uuid::Uuid;

use super::{database, now, seconds};
use crate::{on_both_databases, support::Db};

on_both_databases!(a_key_has_one_holder_then_its_answer, locks_run_out_and_old_keys_are_forgotten);

fn reply() -> StoredReply {
    StoredReply { status: 202, location: Some("/commands/1".into()), body: "{\"id\":1}".into() }
}

async fn a_key_has_one_holder_then_its_answer(db: Db) {
    let store = database(db).await.idempotency();
    let (owner, t) = (Uuid::new_v4(), now());
    let reserve = |fingerprint: &'static str| {
        let store = store.clone();
        async move { store.reserve(owner, "k", fingerprint, t, t + seconds(60), t - seconds(86_400)).await.unwrap() }
    };
    let (first, second) = tokio::join!(reserve("f"), reserve("f"));
    assert_eq!(
        [&first, &second].iter().filter(|r| r.is_none()).count(),
        1,
        "exactly one of two at once holds it: {first:?} {second:?}"
    );
    assert_eq!(reserve("f").await, Some(KeyRecord { fingerprint: "f".into(), reply: None }), "in flight");
    store.complete(owner, "k", &reply()).await.unwrap();
    assert_eq!(reserve("f").await, Some(KeyRecord { fingerprint: "f".into(), reply: Some(reply()) }));
    assert_eq!(reserve("g").await.unwrap().fingerprint, "f", "another request meets the first's fingerprint");
    store.release(owner, "k").await.unwrap();
    assert!(reserve("f").await.unwrap().reply.is_some(), "an answered key is not released");
    let other_owner = store.reserve(Uuid::new_v4(), "k", "f", t, t + seconds(60), t - seconds(86_400)).await.unwrap();
    assert_eq!(other_owner, None, "keys of another API key are its own");
}

async fn locks_run_out_and_old_keys_are_forgotten(db: Db) {
    let store = database(db).await.idempotency();
    let (owner, t) = (Uuid::new_v4(), now());
    let day = seconds(86_400);
    assert_eq!(store.reserve(owner, "k", "f", t, t + seconds(60), t - day).await.unwrap(), None);
    let later = t + seconds(61);
    assert!(store.reserve(owner, "k", "g", later, later + seconds(60), later - day).await.unwrap().is_some());
    assert_eq!(
        store.reserve(owner, "k", "f", later, later + seconds(60), later - day).await.unwrap(),
        None,
        "the same request takes over a reservation whose lock ran out"
    );
    store.complete(owner, "k", &reply()).await.unwrap();
    let next_day = t + day + seconds(62);
    assert_eq!(
        store.reserve(owner, "k", "g", next_day, next_day + seconds(60), next_day - day).await.unwrap(),
        None,
        "a key past its retention is new again"
    );
    store.release(owner, "k").await.unwrap();
    assert_eq!(store.reserve(owner, "k", "g", next_day, next_day, next_day - day).await.unwrap(), None, "released");
    assert_eq!(store.purge(next_day + seconds(1)).await.unwrap(), 1);
    assert_eq!(store.purge(next_day + seconds(1)).await.unwrap(), 0);
}
