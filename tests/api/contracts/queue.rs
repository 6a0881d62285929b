//! `CommandQueue`: claims, leases and what becomes of a command whose worker vanished.

use std::{collections::BTreeMap, sync::Arc};

use chrono::{DateTime, Utc};
use rdev_api::{
    domain::{Command, CommandEnd, CommandFilter, CommandStatus, EnqueueRequest, ExecOutcome, ProjectId},
    ports::{CancelEffect, CommandQueue, Recovered},
};

use super::{caller, database, now, page, seconds};
use crate::support::{Db, fakes::MemoryQueue};

/// The queue of a fresh database, or the in-memory fake the service tests use.
async fn queue(db: Option<Db>) -> Arc<dyn CommandQueue> {
    match db {
        Some(db) => database(db).await.command_queue(),
        None => Arc::new(MemoryQueue::default()),
    }
}

fn command(project: &str, priority: u8, max_attempts: u32, at: DateTime<Utc>) -> Command {
    let request = EnqueueRequest {
        command: format!("echo {priority}"),
        timeout_secs: Some(60),
        workdir: Some("src".into()),
        env: Some(BTreeMap::from([("MODE".to_owned(), "test".to_owned())])),
        priority: Some(priority),
        max_attempts: Some(max_attempts),
        max_output_bytes: None,
        stdin: None,
        stdin_base64: None,
    };
    let project = ProjectId::parse(project).expect("a project id");
    Command::new(request, project, caller(), crate::support::command_defaults(30), at).expect("a valid command")
}

fn ran(exit_code: i32, at: DateTime<Utc>) -> CommandEnd {
    CommandEnd::Ran(ExecOutcome {
        exit_code,
        stdout: "out\n".into(),
        stderr: "err\n".into(),
        stdout_truncated: true,
        stderr_truncated: false,
        stdout_omitted: Some(rdev_api::domain::Omitted { offset: 2, bytes: 10 }),
        stderr_omitted: None,
        timed_out: false,
        started_at: at,
        finished_at: at,
        duration_ms: 12,
        shell_state: None,
        error: None,
    })
}

on_every_adapter!(queue:
    commands_read_back_as_enqueued_and_list_newest_first,
    claims_take_the_highest_priority_then_the_oldest_each_once,
    a_claim_holds_through_start_renew_and_finish_for_its_worker_only,
    cancel_stops_a_queued_command_and_flags_a_running_one,
    expired_leases_requeue_what_may_run_again_and_fail_the_rest,
    release_returns_only_an_unstarted_claim,
);

async fn commands_read_back_as_enqueued_and_list_newest_first(queue: Arc<dyn CommandQueue>) {
    let t = now();
    let first = command("alpha", 5, 1, t);
    let second = command("beta", 5, 1, t + seconds(1));
    let third = command("alpha", 7, 3, t + seconds(2));
    for c in [&first, &second, &third] {
        queue.enqueue(c).await.unwrap();
    }
    assert_eq!(queue.get(third.id).await.unwrap().as_ref(), Some(&third), "every field, env and caller included");
    assert_eq!(queue.get(uuid::Uuid::new_v4()).await.unwrap(), None);

    let all = queue.list(&CommandFilter::default(), &page(2, None)).await.unwrap();
    assert_eq!(all.items.iter().map(|c| c.id).collect::<Vec<_>>(), [third.id, second.id]);
    let rest = queue.list(&CommandFilter::default(), &page(2, all.next_cursor.as_deref())).await.unwrap();
    assert_eq!((rest.items.iter().map(|c| c.id).collect::<Vec<_>>(), rest.next_cursor), (vec![first.id], None));

    let alpha = CommandFilter { project_id: Some(ProjectId::parse("alpha").unwrap()), ..Default::default() };
    let listed = queue.list(&alpha, &page(10, None)).await.unwrap();
    assert_eq!(listed.items.iter().map(|c| c.id).collect::<Vec<_>>(), [third.id, first.id]);
    let running = CommandFilter { status: Some(CommandStatus::Running), ..Default::default() };
    assert!(queue.list(&running, &page(10, None)).await.unwrap().items.is_empty());
}

async fn claims_take_the_highest_priority_then_the_oldest_each_once(queue: Arc<dyn CommandQueue>) {
    let t = now();
    let (low, high, later_low) = (command("p", 5, 1, t), command("p", 9, 1, t), command("p", 5, 1, t + seconds(1)));
    for c in [&low, &high, &later_low] {
        queue.enqueue(c).await.unwrap();
    }
    let mut depth = queue.depth().await.unwrap();
    depth.sort();
    assert_eq!(depth, [(5, 2), (9, 1)]);

    let lease = t + seconds(30);
    let mut order = Vec::new();
    while let Some(claimed) = queue.claim("w1", lease, chrono::Utc::now(), &[]).await.unwrap() {
        assert_eq!(claimed.status, CommandStatus::Running);
        order.push(claimed.id);
    }
    assert_eq!(order, [high.id, low.id, later_low.id]);
    assert_eq!(queue.claim("w2", lease, chrono::Utc::now(), &[]).await.unwrap(), None, "nothing is claimed twice");
    assert!(queue.depth().await.unwrap().iter().all(|(_, n)| *n == 0));
}

async fn a_claim_holds_through_start_renew_and_finish_for_its_worker_only(queue: Arc<dyn CommandQueue>) {
    let t = now();
    let queued = command("p", 5, 1, t);
    queue.enqueue(&queued).await.unwrap();
    let id = queue.claim("w1", t + seconds(30), chrono::Utc::now(), &[]).await.unwrap().unwrap().id;

    assert!(!queue.start(id, "w2", t).await.unwrap(), "another worker's claim");
    assert!(queue.start(id, "w1", t + seconds(1)).await.unwrap());
    let started = queue.get(id).await.unwrap().unwrap();
    assert_eq!((started.attempts, started.started_at), (1, Some(t + seconds(1))));

    assert_eq!(queue.renew(id, "w2", t + seconds(60)).await.unwrap(), None);
    assert_eq!(queue.renew(id, "w1", t + seconds(60)).await.unwrap(), Some(false));
    assert_eq!(queue.cancel(id, t).await.unwrap().map(|(_, e)| e), Some(CancelEffect::Requested));
    assert_eq!(queue.renew(id, "w1", t + seconds(60)).await.unwrap(), Some(true), "the renewal reads the cancel");

    assert_eq!(queue.finish(id, "w2", &ran(3, t), t, &super::entry("p", t)).await.unwrap(), None);
    let finished =
        queue.finish(id, "w1", &ran(3, t), t + seconds(2), &super::entry("p", t)).await.unwrap().expect("finished");
    assert_eq!(finished, queue.get(id).await.unwrap().unwrap(), "finish returns the stored command");
    assert_eq!(finished.status, CommandStatus::Failed);
    assert_eq!(finished.exit_code, Some(3));
    assert_eq!((finished.stdout.as_deref(), finished.stderr.as_deref()), (Some("out\n"), Some("err\n")));
    assert!(finished.stdout_truncated && !finished.stderr_truncated);
    assert_eq!(finished.stdout_omitted, Some(rdev_api::domain::Omitted { offset: 2, bytes: 10 }), "where it was cut");
    assert_eq!(finished.stderr_omitted, None);
    assert_eq!(finished.finished_at, Some(t + seconds(2)));
    assert_eq!(queue.renew(id, "w1", t + seconds(60)).await.unwrap(), None, "a finished claim is gone");
    assert_eq!(
        queue.finish(id, "w1", &CommandEnd::Cancelled, t, &super::entry("p", t)).await.unwrap(),
        None,
        "finished once"
    );

    let failed = command("p", 5, 1, t);
    queue.enqueue(&failed).await.unwrap();
    queue.claim("w1", t + seconds(30), chrono::Utc::now(), &[]).await.unwrap();
    let ended = queue
        .finish(failed.id, "w1", &CommandEnd::Error("no project".into()), t, &super::entry("p", t))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (ended.status, ended.error.as_deref(), ended.exit_code),
        (CommandStatus::Failed, Some("no project"), None)
    );
}

async fn cancel_stops_a_queued_command_and_flags_a_running_one(queue: Arc<dyn CommandQueue>) {
    let t = now();
    let queued = command("p", 5, 1, t);
    queue.enqueue(&queued).await.unwrap();
    let (cancelled, effect) = queue.cancel(queued.id, t + seconds(1)).await.unwrap().unwrap();
    assert_eq!(effect, CancelEffect::Cancelled);
    assert_eq!((cancelled.status, cancelled.finished_at), (CommandStatus::Cancelled, Some(t + seconds(1))));
    assert_eq!(
        queue.claim("w1", t + seconds(30), chrono::Utc::now(), &[]).await.unwrap(),
        None,
        "a cancelled command is not claimed"
    );

    let (again, effect) = queue.cancel(queued.id, t + seconds(2)).await.unwrap().unwrap();
    assert_eq!((effect, again), (CancelEffect::Unchanged, cancelled), "a final command stays as it was");
    assert_eq!(queue.cancel(uuid::Uuid::new_v4(), t).await.unwrap(), None);

    let running = command("p", 5, 1, t);
    queue.enqueue(&running).await.unwrap();
    queue.claim("w1", t + seconds(30), chrono::Utc::now(), &[]).await.unwrap();
    let (flagged, effect) = queue.cancel(running.id, t).await.unwrap().unwrap();
    assert_eq!(
        (effect, flagged.status, flagged.cancel_requested),
        (CancelEffect::Requested, CommandStatus::Running, true)
    );
}

async fn expired_leases_requeue_what_may_run_again_and_fail_the_rest(queue: Arc<dyn CommandQueue>) {
    let t = now();
    let unstarted = command("p", 9, 1, t);
    let retryable = command("p", 8, 2, t);
    let once = command("p", 7, 1, t);
    let cancelling = command("p", 6, 3, t);
    for c in [&unstarted, &retryable, &once, &cancelling] {
        queue.enqueue(c).await.unwrap();
    }
    let lease = t + seconds(30);
    for c in [&unstarted, &retryable, &once, &cancelling] {
        assert_eq!(queue.claim("gone", lease, chrono::Utc::now(), &[]).await.unwrap().unwrap().id, c.id);
    }
    for c in [&retryable, &once, &cancelling] {
        assert!(queue.start(c.id, "gone", t).await.unwrap());
    }
    queue.cancel(cancelling.id, t).await.unwrap();

    let audited = std::sync::Mutex::new(Vec::new());
    let audit = |recovered: &Recovered| {
        audited.lock().unwrap().push(recovered.command().id);
        super::entry_of(recovered.command())
    };
    assert!(queue.recover_expired(t + seconds(10), &audit).await.unwrap().is_empty(), "leases still hold");
    let mut recovered = queue.recover_expired(t + seconds(31), &audit).await.unwrap();
    recovered.sort_by_key(|r| std::cmp::Reverse(r.command().priority));
    let summary: Vec<_> = recovered
        .iter()
        .map(|r| (matches!(r, Recovered::Lost(_)), r.command().id, r.command().status, r.command().error.as_deref()))
        .collect();
    assert_eq!(
        summary,
        [
            (false, retryable.id, CommandStatus::Queued, None),
            (true, once.id, CommandStatus::Failed, Some("worker lost")),
            (true, cancelling.id, CommandStatus::Cancelled, Some("worker lost")),
        ],
        "started commands with no attempt left (or cancelled) end; the retryable one goes back; unstarted ones \
         are not reported: nothing ran"
    );
    let mut audited = audited.into_inner().unwrap();
    audited.sort();
    let mut expected = vec![retryable.id, cancelling.id, once.id];
    expected.sort();
    assert_eq!(audited, expected, "an audit entry for each started command");
    for c in [&unstarted, &retryable] {
        let back = queue.get(c.id).await.unwrap().unwrap();
        assert_eq!((back.status, back.started_at), (CommandStatus::Queued, None));
    }
    assert_eq!(queue.get(retryable.id).await.unwrap().unwrap().attempts, 1, "the attempt made counts");
    assert_eq!(queue.claim("w1", t + seconds(90), chrono::Utc::now(), &[]).await.unwrap().unwrap().id, unstarted.id);
}

async fn release_returns_only_an_unstarted_claim(queue: Arc<dyn CommandQueue>) {
    let t = now();
    let (a, b) = (command("p", 9, 1, t), command("p", 1, 1, t));
    queue.enqueue(&a).await.unwrap();
    queue.enqueue(&b).await.unwrap();
    queue.claim("w1", t + seconds(30), chrono::Utc::now(), &[]).await.unwrap();
    queue.claim("w1", t + seconds(30), chrono::Utc::now(), &[]).await.unwrap();
    assert!(queue.start(b.id, "w1", t).await.unwrap());

    queue.release(a.id, "w2").await.unwrap();
    assert_eq!(queue.get(a.id).await.unwrap().unwrap().status, CommandStatus::Running, "not w2's to release");
    queue.release(a.id, "w1").await.unwrap();
    queue.release(b.id, "w1").await.unwrap();
    assert_eq!(queue.get(a.id).await.unwrap().unwrap().status, CommandStatus::Queued);
    assert_eq!(queue.get(b.id).await.unwrap().unwrap().status, CommandStatus::Running, "it ran: not released");
}
