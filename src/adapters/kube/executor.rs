//! `Executor` over pod exec. stdout and stderr are read as they arrive into capped buffers while
//! waiting for the exec status; the exit code comes from the status channel (`ExitCode` cause).
//!
//! kube-rs never ends the output streams when the connection drops without a close frame, so the
//! status is raced against the reading instead of awaited after it: a status that never comes is
//! a lost stream, an infrastructure failure.
//!
//! stdin, when given, is written as the command starts and the stream's stdin stays open until
//! the end (see `script`: the command sees EOF after exactly its bytes, on v4 and v5 alike).
//!
//! On timeout (or when the caller goes away) the exec stream is closed. The kubelet then closes
//! the command's stdio; a command that ignores that keeps running in the container until it ends,
//! which Kubernetes offers no way to prevent short of a TTY.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{
    exec::{attach, exit_code},
    script::{WORKDIR_MISSING, WORKDIR_MISSING_EXIT, argv, take_record_argv},
};
use crate::{
    adapters::capture::{Capture, drain},
    domain::{
        CommandSpec, DomainError, ExecOutcome, MIN_OUTPUT_BYTES, Project, ShellState, session::MAX_STATE_RECORD_BYTES,
    },
    ports::{Executor, KILLED_EXIT, OutputSink, Stop, Stream},
};

/// How long output may keep arriving after the status, or the status after the output ended.
const SETTLE: Duration = Duration::from_secs(5);

pub struct KubeExecutor {
    pods: Api<Pod>,
    api_timeout: Duration,
}

impl KubeExecutor {
    pub fn new(exec_client: kube::Client, namespace: &str, api_timeout: Duration) -> Self {
        Self { pods: Api::namespaced(exec_client, namespace), api_timeout }
    }

    /// A session command's state record, read from the container and removed there. Whatever
    /// goes wrong (the file never written, the stream lost) is no record: the session stays.
    async fn take_record(&self, project: &Project, record: &str) -> Option<ShellState> {
        let read = async {
            let argv = take_record_argv(record);
            let mut attached = attach(&self.pods, project, argv, false, self.api_timeout).await.ok()?;
            let mut bytes = Vec::new();
            let mut stdout = attached.stdout()?.take(MAX_STATE_RECORD_BYTES as u64 + 1);
            stdout.read_to_end(&mut bytes).await.ok()?;
            let status = attached.take_status()?.await?;
            (status.status.as_deref() == Some("Success")).then_some(bytes)
        };
        let bytes = tokio::time::timeout(self.api_timeout, read).await.ok().flatten()?;
        ShellState::parse(&bytes)
    }
}

#[async_trait]
impl Executor for KubeExecutor {
    #[tracing::instrument(name = "command.execute", skip_all, fields(project.id = %project.id, executor = "kubernetes", exit_code))]
    async fn run(
        &self,
        project: &Project,
        spec: &CommandSpec,
        live: OutputSink,
        stop: &Stop,
    ) -> Result<ExecOutcome, DomainError> {
        let record = spec.keep_state.then(|| format!("/tmp/.rdev-state-{}", uuid::Uuid::new_v4()));
        let argv = argv(spec, record.as_deref());
        let mut attached = attach(&self.pods, project, argv, spec.stdin.is_some(), self.api_timeout).await?;
        let started_at = Utc::now();
        let clock = Instant::now();
        let (mut stdout_pipe, mut stderr_pipe) = (attached.stdout(), attached.stderr());
        // Held open until the end: on v4, closing stdin would close the whole stream.
        let mut stdin_pipe = attached.stdin();
        let status = attached
            .take_status()
            .ok_or_else(|| DomainError::internal(anyhow::anyhow!("exec without a status channel")))?;
        let capture = Capture::new(spec.max_output_bytes, live);

        let feed = async {
            if let (Some(pipe), Some(stdin)) = (stdin_pipe.as_mut(), spec.stdin.as_ref()) {
                // A command that stops reading ends without the rest; `head -c` bounds what it sees.
                let _ = pipe.write_all(stdin).await;
                let _ = pipe.flush().await;
            }
            std::future::pending::<()>().await
        };
        let run = async {
            let output = async {
                tokio::join!(
                    drain(stdout_pipe.as_mut(), Stream::Stdout, &capture),
                    drain(stderr_pipe.as_mut(), Stream::Stderr, &capture)
                )
            };
            tokio::pin!(output, status, feed);
            tokio::select! {
                status = &mut status => {
                    // A lost stream (no status) will never end the output either.
                    if status.is_some() {
                        let _ = tokio::time::timeout(SETTLE, &mut output).await;
                    }
                    status
                }
                _ = &mut output => tokio::time::timeout(SETTLE, &mut status).await.ok().flatten(),
                () = &mut feed => None,
            }
        };
        let unless_stopped = async {
            tokio::select! {
                status = run => Some(status),
                () = stop.cancelled() => None,
            }
        };
        let finished = tokio::time::timeout(spec.timeout, unless_stopped).await;
        // Closes the exec stream, whatever happened.
        drop(stdin_pipe);
        attached.abort();
        let ended_itself = matches!(finished, Ok(Some(Some(_))));
        let (exit_code, timed_out) = match finished {
            Err(_elapsed) => (KILLED_EXIT, true),
            Ok(None) => (KILLED_EXIT, false),
            Ok(Some(None)) => return Err(DomainError::executor_unavailable("pod exec stream ended without a status")),
            Ok(Some(Some(status))) => (exit_code(&status)?, false),
        };
        let mut outcome = capture.outcome(exit_code, timed_out, started_at, clock);
        if exit_code == WORKDIR_MISSING_EXIT && outcome.stderr.trim_end() == WORKDIR_MISSING {
            return Err(DomainError::invalid("workdir", "does not exist in the project"));
        }
        if let Some(record) = record.filter(|_| ended_itself) {
            outcome.shell_state = self.take_record(project, &record).await.map(Box::new);
        }
        tracing::Span::current().record("exit_code", exit_code);
        Ok(outcome)
    }

    /// The workdir's existence, asked of the container with `true` run there (the same script,
    /// so the same answer `run` would give). Without a workdir there is nothing to ask.
    async fn check(&self, project: &Project, spec: &CommandSpec) -> Result<(), DomainError> {
        if spec.workdir.is_none() {
            return Ok(());
        }
        let probe = CommandSpec {
            command: "true".into(),
            timeout: self.api_timeout,
            workdir: spec.workdir.clone(),
            env: Default::default(),
            max_output_bytes: MIN_OUTPUT_BYTES,
            stdin: None,
            keep_state: false,
        };
        self.run(project, &probe, None, &Stop::new()).await.map(drop)
    }
}
