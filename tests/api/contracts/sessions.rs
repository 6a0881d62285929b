//! `SessionStore`: one lease holder at a time, leases that run out, expiry, and listing by
//! owner and project.

use rdev_api::{
    domain::{ProjectId, Session, SessionFilter},
    ports::Acquired,
};
use uuid::Uuid;

use super::{database, now, page, seconds};
use crate::{on_both_databases, support::Db};

on_both_databases!(
    one_command_holds_a_session_at_a_time,
    sessions_expire_and_are_listed_by_owner,
    a_key_s_live_sessions_stop_at_its_quota
);

fn session(project: &str, owner: Option<Uuid>, created: chrono::DateTime<chrono::Utc>) -> Session {
    Session {
        id: Uuid::new_v4(),
        project_id: ProjectId::parse(project).unwrap(),
        workdir: Some("sub dir".into()),
        env: [("FOO".to_owned(), "a b\né".to_owned())].into(),
        created_at: created,
        last_used_at: created,
        expires_at: created + seconds(3600),
        api_key_id: owner,
    }
}

async fn one_command_holds_a_session_at_a_time(db: Db) {
    let store = database(db).await.sessions();
    let t = now();
    let stored = session("hello", Some(Uuid::new_v4()), t);
    assert!(store.create(&stored, 100).await.unwrap());
    assert_eq!(store.get(stored.id, t).await.unwrap().as_ref(), Some(&stored));
    let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
    let (a, b) = tokio::join!(
        store.acquire(stored.id, first, t, t + seconds(60)),
        store.acquire(stored.id, second, t, t + seconds(60))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        [&a, &b].iter().filter(|r| matches!(r, Acquired::Taken(_))).count(),
        1,
        "exactly one of two at once: {a:?} {b:?}"
    );
    let holder = if matches!(a, Acquired::Taken(_)) { first } else { second };
    let other = if holder == first { second } else { first };
    store.release(stored.id, other).await.unwrap();
    assert_eq!(
        store.acquire(stored.id, other, t, t + seconds(60)).await.unwrap(),
        Acquired::Busy,
        "not the holder's release"
    );
    store.release(stored.id, holder).await.unwrap();
    assert!(matches!(store.acquire(stored.id, other, t, t + seconds(60)).await.unwrap(), Acquired::Taken(_)));
    let later = t + seconds(61);
    assert!(
        matches!(store.acquire(stored.id, holder, later, later + seconds(60)).await.unwrap(), Acquired::Taken(_)),
        "a lease that ran out is taken over"
    );
    assert_eq!(store.acquire(Uuid::new_v4(), holder, t, t).await.unwrap(), Acquired::Missing);
}

async fn sessions_expire_and_are_listed_by_owner(db: Db) {
    let store = database(db).await.sessions();
    let t = now();
    let (me, you) = (Uuid::new_v4(), Uuid::new_v4());
    let mine = session("hello", Some(me), t);
    let newer = session("other", Some(me), t + seconds(1));
    let yours = session("hello", Some(you), t);
    for s in [&mine, &newer, &yours] {
        assert!(store.create(s, 100).await.unwrap());
    }
    let listed = |owner: Option<Uuid>, project: Option<&str>| {
        let store = store.clone();
        let filter = SessionFilter { project_id: project.map(|p| ProjectId::parse(p).unwrap()), api_key_id: owner };
        async move {
            store.list(&filter, &page(10, None), t).await.unwrap().items.into_iter().map(|s| s.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(listed(Some(me), None).await, [newer.id, mine.id], "newest first");
    assert_eq!(listed(Some(me), Some("hello")).await, [mine.id]);
    assert_eq!(listed(None, Some("hello")).await.len(), 2);
    let first_page =
        store.list(&SessionFilter { project_id: None, api_key_id: Some(me) }, &page(1, None), t).await.unwrap();
    let cursor = first_page.next_cursor.clone().unwrap();
    let second_page = store
        .list(&SessionFilter { project_id: None, api_key_id: Some(me) }, &page(1, Some(&cursor)), t)
        .await
        .unwrap();
    assert_eq!(second_page.items.iter().map(|s| s.id).collect::<Vec<_>>(), [mine.id]);

    let expired = t + seconds(3600);
    assert_eq!(store.get(mine.id, expired).await.unwrap(), None, "expired is gone");
    assert_eq!(store.acquire(mine.id, Uuid::new_v4(), expired, expired).await.unwrap(), Acquired::Missing);
    assert!(!store.delete(mine.id, expired).await.unwrap());
    let held = t + seconds(3599);
    assert!(matches!(
        store.acquire(yours.id, Uuid::new_v4(), held, held + seconds(120)).await.unwrap(),
        Acquired::Taken(_)
    ));
    assert!(store.delete(newer.id, t).await.unwrap());
    assert!(!store.delete(newer.id, t).await.unwrap());
    assert_eq!(store.purge(t + seconds(3600)).await.unwrap(), 1, "the held one waits for its lease");
    assert_eq!(store.purge(t + seconds(3720)).await.unwrap(), 1);
}

async fn a_key_s_live_sessions_stop_at_its_quota(db: Db) {
    let store = database(db).await.sessions();
    let t = now();
    let (me, you) = (Uuid::new_v4(), Uuid::new_v4());
    assert!(store.create(&session("hello", Some(me), t), 2).await.unwrap());
    assert!(store.create(&session("hello", Some(me), t), 2).await.unwrap());
    let third = session("hello", Some(me), t);
    assert!(!store.create(&third, 2).await.unwrap(), "a third live session of the key is refused");
    assert_eq!(store.get(third.id, t).await.unwrap(), None, "and not stored");
    assert!(store.create(&session("hello", Some(you), t), 2).await.unwrap(), "other keys are not counted");
    let later = t + seconds(3600);
    assert!(store.create(&session("hello", Some(me), later), 2).await.unwrap(), "expired sessions are not counted");
}
