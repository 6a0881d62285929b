//! `ApiKeyRepo`: keys found by the hash of a secret, rotation's grace, revocation, usage times.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rdev_api::{
    domain::{ApiKey, ApiKeySecret, DomainError, KeyHash, Scope},
    ports::ApiKeyRepo,
};

use super::{database, now, page, seconds};
use crate::{on_both_databases, support::Db};

async fn keys(db: Db) -> Arc<dyn ApiKeyRepo> {
    database(db).await.api_keys()
}

fn key(name: &str, created_at: DateTime<Utc>) -> (ApiKey, KeyHash) {
    let secret = ApiKeySecret::generate();
    let key = ApiKey {
        id: uuid::Uuid::new_v4(),
        name: name.into(),
        prefix: secret.display_prefix(),
        scopes: vec![Scope::ProjectsRead, Scope::CommandsExecute],
        allowed_ips: vec!["10.0.0.0/8".parse().unwrap(), "2001:db8::/32".parse().unwrap()],
        rate_limit_per_minute: Some(120),
        quotas: Default::default(),
        expires_at: Some(created_at + seconds(3600)),
        created_at,
        last_used_at: None,
        revoked_at: None,
    };
    (key, secret.hash())
}

on_both_databases!(
    keys_read_back_by_id_and_by_hash_and_a_hash_is_stored_once,
    only_the_first_key_is_inserted_if_none,
    a_hash_once_stored_is_never_inserted_again,
    rotation_keeps_the_old_secret_until_its_grace_ends,
    updates_and_revocations_change_only_their_fields,
    usage_times_never_move_backwards,
    keys_list_newest_first_in_pages,
);

async fn keys_read_back_by_id_and_by_hash_and_a_hash_is_stored_once(db: Db) {
    let keys = keys(db).await;
    let (stored, hash) = key("ci", now());
    keys.insert(&stored, &hash).await.unwrap();
    assert_eq!(keys.get(stored.id).await.unwrap().as_ref(), Some(&stored), "every field");
    let found = keys.find_by_hash(&hash).await.unwrap().expect("found by its hash");
    assert_eq!((found.key, found.secret_valid_until), (stored.clone(), None));
    assert!(found.hash.matches(&hash));
    assert_eq!(keys.find_by_hash(&ApiKeySecret::generate().hash()).await.unwrap(), None);
    assert_eq!(keys.get(uuid::Uuid::new_v4()).await.unwrap(), None);

    let (other, _) = key("other", now());
    let error = keys.insert(&other, &hash).await.expect_err("the same hash twice");
    assert!(matches!(error, DomainError::Conflict(_)), "{error:?}");
    assert_eq!(keys.get(other.id).await.unwrap(), None, "nothing stored");
}

async fn only_the_first_key_is_inserted_if_none(db: Db) {
    let keys = keys(db).await;
    let (first, first_hash) = key("bootstrap", now());
    let (second, second_hash) = key("bootstrap", now());
    assert!(keys.insert_if_none(&first, &first_hash).await.unwrap());
    assert!(!keys.insert_if_none(&second, &second_hash).await.unwrap());
    assert_eq!(keys.get(second.id).await.unwrap(), None);
}

async fn a_hash_once_stored_is_never_inserted_again(db: Db) {
    let keys = keys(db).await;
    let (bootstrap, hash) = key("bootstrap", now());
    assert!(keys.insert_if_hash_absent(&bootstrap, &hash).await.unwrap());
    let (again, _) = key("bootstrap", now());
    assert!(!keys.insert_if_hash_absent(&again, &hash).await.unwrap(), "idempotent at every start");

    keys.revoke(bootstrap.id, now()).await.unwrap();
    assert!(!keys.insert_if_hash_absent(&again, &hash).await.unwrap(), "revoked stays revoked");

    let (rotated, old_hash) = key("rotated", now());
    keys.insert(&rotated, &old_hash).await.unwrap();
    assert!(keys.rotate(rotated.id, &ApiKeySecret::generate().hash(), "rdev_new", now()).await.unwrap());
    assert!(!keys.insert_if_hash_absent(&again, &old_hash).await.unwrap(), "a retired secret stays retired");
    assert_eq!(keys.get(again.id).await.unwrap(), None);
}

async fn rotation_keeps_the_old_secret_until_its_grace_ends(db: Db) {
    let keys = keys(db).await;
    let (stored, old_hash) = key("ci", now());
    keys.insert(&stored, &old_hash).await.unwrap();
    let new_hash = ApiKeySecret::generate().hash();
    let grace_end = now() + seconds(300);
    assert!(keys.rotate(stored.id, &new_hash, "rdev_newprefix", grace_end).await.unwrap());

    let current = keys.find_by_hash(&new_hash).await.unwrap().expect("the new secret");
    assert_eq!((current.key.prefix.as_str(), current.secret_valid_until), ("rdev_newprefix", None));
    let old = keys.find_by_hash(&old_hash).await.unwrap().expect("the old secret, for its grace");
    assert_eq!((old.key.id, old.secret_valid_until), (stored.id, Some(grace_end)));
    assert!(old.hash.matches(&old_hash));
    assert!(!keys.rotate(uuid::Uuid::new_v4(), &ApiKeySecret::generate().hash(), "x", grace_end).await.unwrap());
}

async fn updates_and_revocations_change_only_their_fields(db: Db) {
    let keys = keys(db).await;
    let (stored, hash) = key("ci", now());
    keys.insert(&stored, &hash).await.unwrap();
    let mut changed = stored.clone();
    changed.name = "renamed".into();
    changed.scopes = vec![Scope::AuditRead];
    changed.allowed_ips = vec![];
    changed.rate_limit_per_minute = None;
    changed.expires_at = None;
    changed.prefix = "ignored".into();
    assert!(keys.update(&changed).await.unwrap());
    let read = keys.get(stored.id).await.unwrap().unwrap();
    assert_eq!(read, ApiKey { prefix: stored.prefix.clone(), ..changed.clone() }, "the five fields, not the prefix");
    assert!(!keys.update(&ApiKey { id: uuid::Uuid::new_v4(), ..changed }).await.unwrap());

    let at = now();
    assert!(keys.revoke(stored.id, at).await.unwrap());
    assert!(keys.revoke(stored.id, at + seconds(60)).await.unwrap());
    assert_eq!(keys.get(stored.id).await.unwrap().unwrap().revoked_at, Some(at), "the first revocation's time");
    assert!(keys.find_by_hash(&hash).await.unwrap().is_some(), "found, so the caller can say revoked");
    assert!(!keys.revoke(uuid::Uuid::new_v4(), at).await.unwrap());
}

async fn usage_times_never_move_backwards(db: Db) {
    let keys = keys(db).await;
    let (a, a_hash) = key("a", now());
    let (b, b_hash) = key("b", now());
    keys.insert(&a, &a_hash).await.unwrap();
    keys.insert(&b, &b_hash).await.unwrap();
    let t = now();
    keys.record_usage(&[(a.id, t), (b.id, t + seconds(5))]).await.unwrap();
    keys.record_usage(&[(a.id, t - seconds(10)), (b.id, t + seconds(9))]).await.unwrap();
    keys.record_usage(&[]).await.unwrap();
    assert_eq!(keys.get(a.id).await.unwrap().unwrap().last_used_at, Some(t));
    assert_eq!(keys.get(b.id).await.unwrap().unwrap().last_used_at, Some(t + seconds(9)));
}

async fn keys_list_newest_first_in_pages(db: Db) {
    let keys = keys(db).await;
    let t = now();
    let mut ids = Vec::new();
    for n in 0..3 {
        let (stored, hash) = key(&format!("k{n}"), t + seconds(n));
        keys.insert(&stored, &hash).await.unwrap();
        ids.push(stored.id);
    }
    ids.reverse();
    let first = keys.list(&page(2, None)).await.unwrap();
    let second = keys.list(&page(2, first.next_cursor.as_deref())).await.unwrap();
    let listed: Vec<_> = first.items.iter().chain(&second.items).map(|k| k.id).collect();
    assert_eq!((listed, second.next_cursor), (ids, None));
}
