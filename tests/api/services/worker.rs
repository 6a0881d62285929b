//! `QueueWorker`: a claimed command runs once, its end is audited and stored, and a cancel or
//! a lost lease stops it wherever it came from.

use rdev_api::{
    domain::{AuditOutcome, CommandStatus},
    ports::CommandQueue,
};

use super::QueueRig;
use crate::support::fakes::ExecEvent;

#[tokio::test]
async fn a_queued_command_runs_once_and_its_end_is_audited_then_stored() {
    let rig = QueueRig::new().with_worker();
    let command = rig.enqueue("hello", "exit 3").await;
    rig.queue.wait_for(command.id, "finished", |c| c.status.is_final()).await;

    let done = rig.queue.command(command.id);
    assert_eq!((done.status, done.exit_code, done.attempts), (CommandStatus::Failed, Some(3), 1));
    assert_eq!(done.stdout.as_deref(), Some("ran exit 3\n"));
    assert!(done.started_at.is_some() && done.finished_at.is_some());
    assert_eq!(rig.executor.started(), 1);
    let audited = rig.audit.recorded();
    assert_eq!(audited.len(), 1, "audited before it was stored, so present once it is");
    assert_eq!((audited[0].id, audited[0].outcome, audited[0].exit_code), (command.id, AuditOutcome::Failed, Some(3)));
    assert_eq!(audited[0].api_key_id, command.caller.api_key_id, "in the name of who enqueued it");
    rig.stop().await;
}

#[tokio::test]
async fn a_command_of_a_missing_project_fails_without_running() {
    let rig = QueueRig::new().with_worker();
    let command = rig.enqueue("ghost", "exit 0").await;
    rig.queue.wait_for(command.id, "finished", |c| c.status.is_final()).await;

    let done = rig.queue.command(command.id);
    assert_eq!((done.status, done.error.as_deref()), (CommandStatus::Failed, Some("project not found")));
    assert_eq!(rig.executor.started(), 0);
    assert_eq!(rig.audit.recorded()[0].outcome, AuditOutcome::Error);
    rig.stop().await;
}

#[tokio::test]
async fn an_executor_that_cannot_start_fails_the_command_with_its_reason() {
    let rig = QueueRig::new().with_worker();
    let command = rig.enqueue("hello", "unavailable").await;
    rig.queue.wait_for(command.id, "finished", |c| c.status.is_final()).await;
    let done = rig.queue.command(command.id);
    assert_eq!(done.status, CommandStatus::Failed);
    assert!(done.error.as_deref().is_some_and(|e| e.contains("the executor is down")), "{:?}", done.error);
    rig.stop().await;
}

#[tokio::test]
async fn a_cancel_from_another_replica_stops_the_command_at_the_next_renewal() {
    let rig = QueueRig::new().with_worker();
    let command = rig.enqueue("hello", "hang").await;
    rig.executor.wait_for(ExecEvent::Started("hang".into())).await;

    // What a cancel on another replica does: only the flag its lease renewal reads.
    rig.queue.cancel(command.id, chrono::Utc::now()).await.unwrap();
    rig.executor.wait_for(ExecEvent::Stopped("hang".into())).await;
    rig.queue.wait_for(command.id, "cancelled", |c| c.status == CommandStatus::Cancelled).await;
    assert_eq!(rig.audit.recorded()[0].outcome, AuditOutcome::Cancelled);
    rig.stop().await;
}

#[tokio::test]
async fn a_cancel_on_this_replica_stops_the_command_at_once() {
    let mut rig = QueueRig::new();
    rig.lease = std::time::Duration::from_secs(3600);
    let rig = rig.with_worker();
    let command = rig.enqueue("hello", "hang").await;
    rig.executor.wait_for(ExecEvent::Started("hang".into())).await;

    // A renewal comes only every second now: the direct signal is what stops it.
    rig.running.cancel(command.id);
    rig.executor.wait_for(ExecEvent::Stopped("hang".into())).await;
    rig.queue.wait_for(command.id, "cancelled", |c| c.status == CommandStatus::Cancelled).await;
    rig.stop().await;
}

#[tokio::test]
async fn a_worker_that_lost_its_lease_stops_and_leaves_the_command_to_the_recovery() {
    let rig = QueueRig::new().with_worker();
    let command = rig.enqueue("hello", "hang").await;
    rig.executor.wait_for(ExecEvent::Started("hang".into())).await;

    // Another replica found the lease expired (this one stalled) and took the command over.
    rig.clock.advance(chrono::Duration::seconds(60));
    // (A second past the lease, so a renewal racing this one cannot save it.)
    let now = rdev_api::ports::Clock::now(&*rig.clock) + chrono::Duration::seconds(1);
    let lost = rig.queue.recover_expired(now, &|r| crate::contracts::entry_of(r.command())).await.unwrap();
    assert_eq!(lost.len(), 1);
    rig.executor.wait_for(ExecEvent::Stopped("hang".into())).await;

    let after = rig.queue.command(command.id);
    assert_eq!((after.status, after.error.as_deref()), (CommandStatus::Failed, Some("worker lost")));
    assert!(rig.audit.recorded().is_empty(), "the worker records nothing for a command it no longer holds");
    rig.stop().await;
}

#[tokio::test]
async fn a_stopped_worker_claims_nothing_more() {
    let rig = QueueRig::new().with_worker();
    let first = rig.enqueue("hello", "exit 0").await;
    rig.queue.wait_for(first.id, "finished", |c| c.status.is_final()).await;
    let queue = rig.queue.clone();
    rig.stop().await;
    let later = QueueRig { queue: queue.clone(), ..QueueRig::new() };
    let waiting = later.enqueue("hello", "exit 0").await;
    assert_eq!(queue.command(waiting.id).status, CommandStatus::Queued);
}
