//! Service tests: the business rules of the queue worker, the queue service and the webhook
//! dispatcher, run on in-memory fakes of their ports (`support::fakes`), so each rule is
//! checked without a database, a process or a network in the way.

mod dispatcher;
mod follow;
mod key_watch;
mod queue;
mod worker;

use std::{sync::Arc, time::Duration};

use rdev_api::{
    domain::{Caller, Command, EnqueueRequest, ProjectId},
    services::{AuditService, DispatchWake, KeyWatch, ProjectService, QueueWorker, RunningCommands},
};
use tokio::{sync::watch, task::JoinHandle};

use crate::support::{
    ManualClock,
    fakes::{FixedProjects, MemoryAuditLog, MemoryKeys, MemoryOutputLog, MemoryQueue, ScriptedExecutor},
};

/// One replica's queue side on fakes: a worker running over a shared in-memory queue.
pub struct QueueRig {
    pub queue: Arc<MemoryQueue>,
    pub executor: Arc<ScriptedExecutor>,
    pub audit: Arc<MemoryAuditLog>,
    pub output: Arc<MemoryOutputLog>,
    pub projects: Arc<ProjectService>,
    pub running: Arc<RunningCommands>,
    pub keys: Arc<MemoryKeys>,
    pub watch: Arc<KeyWatch>,
    pub clock: Arc<ManualClock>,
    /// The lease the worker takes; it renews every third of it.
    pub lease: Duration,
    stop: watch::Sender<bool>,
    worker: Option<JoinHandle<()>>,
}

impl QueueRig {
    /// Fakes for the project `hello`, with no worker yet.
    pub fn new() -> Self {
        let audit = Arc::new(MemoryAuditLog::default());
        let keys = Arc::new(MemoryKeys::default());
        let clock = ManualClock::new();
        let watch = Arc::new(KeyWatch::new(keys.clone(), clock.clone(), Duration::from_secs(1)));
        Self {
            queue: Arc::new(MemoryQueue::sharing(audit.clone())),
            executor: Arc::new(ScriptedExecutor::default()),
            audit,
            output: Arc::new(MemoryOutputLog::default()),
            projects: Arc::new(ProjectService::new(FixedProjects::named(&["hello"]))),
            running: Arc::new(RunningCommands::default()),
            keys,
            watch,
            clock,
            lease: Duration::from_millis(300),
            stop: watch::Sender::new(false),
            worker: None,
        }
    }

    /// Starts one worker, as a replica does.
    pub fn with_worker(mut self) -> Self {
        let worker = QueueWorker {
            name: "worker-1".into(),
            queue: self.queue.clone(),
            projects: self.projects.clone(),
            executor: self.executor.clone(),
            output: self.output.clone(),
            audit: Arc::new(AuditService::new(self.audit.clone(), self.clock.clone())),
            deliveries: DispatchWake::default(),
            running: self.running.clone(),
            keys: self.watch.clone(),
            workers: 1,
            clock: self.clock.clone(),
            lease: self.lease,
        };
        self.worker = Some(tokio::spawn(worker.run(self.stop.subscribe())));
        self
    }

    /// Enqueues `command` for `project` directly, as the queue service would.
    pub async fn enqueue(&self, project: &str, command: &str) -> Command {
        let request = EnqueueRequest {
            command: command.into(),
            timeout_secs: None,
            workdir: None,
            env: None,
            priority: None,
            max_attempts: None,
            max_output_bytes: None,
            stdin: None,
            stdin_base64: None,
        };
        let project = ProjectId::parse(project).expect("a project id");
        let command = Command::new(
            request,
            project,
            caller(),
            crate::support::command_defaults(30),
            rdev_api::ports::Clock::now(&*self.clock),
        )
        .expect("a valid command");
        // Its key exists and may act, as a real enqueuer's does.
        let key_id = command.caller.api_key_id.expect("a caller with a key");
        self.keys.put(rdev_api::domain::ApiKey { id: key_id, ..key_watch::key() });
        rdev_api::ports::CommandQueue::enqueue(&*self.queue, &command).await.expect("enqueued");
        command
    }

    /// Asks the worker to stop and waits until it has.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        if let Some(worker) = self.worker.take() {
            tokio::time::timeout(Duration::from_secs(10), worker).await.expect("the worker stops").expect("no panic");
        }
    }
}

pub fn caller() -> Caller {
    Caller { api_key_id: Some(uuid::Uuid::new_v4()), request_id: "req-service".into(), client_ip: None }
}
