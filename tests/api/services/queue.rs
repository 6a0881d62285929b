//! `QueueService`: what may be enqueued, and what a cancel does in each state of a command.

use std::sync::{Arc, atomic::Ordering};

use rdev_api::{
    domain::{CommandReader, CommandStatus, DomainError, EnqueueRequest, ProjectId},
    ports::CommandQueue,
    services::{AuditService, Cancelled, QueueService},
};

use super::{QueueRig, caller};
use crate::support::fakes::ExecEvent;

fn service(rig: &QueueRig) -> QueueService {
    let audit = Arc::new(AuditService::new(rig.audit.clone(), rig.clock.clone()));
    QueueService::new(
        rig.queue.clone(),
        rig.projects.clone(),
        audit,
        rig.running.clone(),
        rig.clock.clone(),
        crate::support::command_defaults(30),
    )
}

const QUOTAS: rdev_api::domain::Quotas =
    rdev_api::domain::Quotas { terminals: 16, sessions: 100, commands: 1000, followers: 100 };

fn request(command: &str, priority: Option<u8>) -> EnqueueRequest {
    EnqueueRequest {
        command: command.into(),
        timeout_secs: None,
        workdir: None,
        env: None,
        priority,
        max_attempts: None,
        max_output_bytes: None,
        stdin: None,
        stdin_base64: None,
    }
}

#[tokio::test]
async fn only_valid_commands_of_existing_projects_are_queued() {
    let rig = QueueRig::new();
    let queue = service(&rig);
    let hello = ProjectId::parse("hello").unwrap();
    let queued = queue.enqueue(caller(), &hello, request("make", Some(9)), QUOTAS).await.unwrap();
    assert_eq!((queued.status, queued.priority, queued.timeout_secs), (CommandStatus::Queued, 9, 30));
    assert_eq!(rig.queue.command(queued.id), queued);

    let error = queue.enqueue(caller(), &hello, request("", Some(12)), QUOTAS).await.unwrap_err();
    let DomainError::Validation(fields) = error else { panic!("a validation error: {error:?}") };
    let fields: Vec<_> = fields.0.keys().map(String::as_str).collect();
    assert_eq!(fields, ["command", "priority"], "every field at once");

    let ghost = ProjectId::parse("ghost").unwrap();
    let error = queue.enqueue(caller(), &ghost, request("make", None), QUOTAS).await.unwrap_err();
    assert!(matches!(error, DomainError::NotFound { entity: "project", .. }), "{error:?}");
    assert_eq!(rig.queue.depth().await.unwrap(), [(9, 1)], "nothing else was queued");
}

#[tokio::test]
async fn a_cancel_ends_a_queued_command_refuses_a_finished_one_and_a_missing_one() {
    let rig = QueueRig::new();
    let queue = service(&rig);
    let command = rig.enqueue("hello", "exit 0").await;
    let Cancelled::Done(cancelled) = queue.cancel(command.id, CommandReader::Admin).await.unwrap() else {
        panic!("cancelled at once")
    };
    assert_eq!(cancelled.status, CommandStatus::Cancelled);

    let error = queue.cancel(command.id, CommandReader::Admin).await.err().expect("already finished");
    assert!(matches!(&error, DomainError::Conflict(m) if m.contains("cancelled")), "{error:?}");
    let error = queue.cancel(uuid::Uuid::new_v4(), CommandReader::Admin).await.err().expect("no such command");
    assert!(matches!(error, DomainError::NotFound { entity: "command", .. }), "{error:?}");
}

#[tokio::test]
async fn a_cancel_of_a_running_command_waits_for_its_worker_to_stop_it() {
    let rig = QueueRig::new().with_worker();
    let queue = service(&rig);
    let command = rig.enqueue("hello", "hang").await;
    rig.executor.wait_for(ExecEvent::Started("hang".into())).await;
    let Cancelled::Done(stopped) = queue.cancel(command.id, CommandReader::Admin).await.unwrap() else {
        panic!("stopped within the wait")
    };
    assert_eq!(stopped.status, CommandStatus::Cancelled);
    rig.stop().await;
}

#[tokio::test]
async fn a_cancel_that_races_a_move_between_queued_and_running_asks_again_a_few_times() {
    let rig = QueueRig::new();
    let queue = service(&rig);
    let command = rig.enqueue("hello", "exit 0").await;
    rig.queue.cancel_races.store(2, Ordering::SeqCst);
    let Cancelled::Done(cancelled) = queue.cancel(command.id, CommandReader::Admin).await.unwrap() else {
        panic!("the third try cancels")
    };
    assert_eq!(cancelled.status, CommandStatus::Cancelled);

    let other = rig.enqueue("hello", "exit 0").await;
    rig.queue.cancel_races.store(100, Ordering::SeqCst);
    let Cancelled::Pending(pending) = queue.cancel(other.id, CommandReader::Admin).await.unwrap() else {
        panic!("gives up asking")
    };
    assert_eq!(pending.status, CommandStatus::Queued);
    assert_eq!(rig.queue.cancel_races.load(Ordering::SeqCst), 96, "one try and three more");
}
