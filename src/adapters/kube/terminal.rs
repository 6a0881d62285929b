//! `TerminalHost` over pod exec with `tty=true`: the container runtime runs the shell on a
//! terminal, keystrokes go on stdin, output comes on stdout (a terminal has no separate
//! stderr), and sizes go on the resize channel. Closing the socket ends the exec stream, which
//! hangs the terminal up (the shell and its foreground jobs get SIGHUP); a job the user started
//! with `nohup` or `setsid` may outlive it, as with `kubectl exec -it`.

use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    api::{AttachParams, TerminalSize as KubeSize},
};

use super::exec::{attach_with, exit_code};
use crate::{
    adapters::terminal::{SHELL_ARGV, connect},
    domain::{DomainError, Project, TerminalSize},
    ports::{TerminalHost, TerminalIo},
};

pub struct KubeTerminals {
    pods: Api<Pod>,
    api_timeout: Duration,
}

impl KubeTerminals {
    pub fn new(client: kube::Client, namespace: &str, api_timeout: Duration) -> Self {
        Self { pods: Api::namespaced(client, namespace), api_timeout }
    }
}

fn kube_size(size: TerminalSize) -> KubeSize {
    KubeSize { width: size.cols, height: size.rows }
}

fn stream_missing(which: &str) -> DomainError {
    DomainError::internal(anyhow::anyhow!("pod exec with a terminal gave no {which}"))
}

#[async_trait]
impl TerminalHost for KubeTerminals {
    async fn open(&self, project: &Project, size: TerminalSize) -> Result<TerminalIo, DomainError> {
        let params = AttachParams::interactive_tty();
        let argv = SHELL_ARGV.map(str::to_owned).to_vec();
        let mut attached = attach_with(&self.pods, project, argv, params, self.api_timeout).await?;
        let stdin = attached.stdin().ok_or_else(|| stream_missing("stdin"))?;
        let stdout = attached.stdout().ok_or_else(|| stream_missing("stdout"))?;
        let status = attached.take_status().ok_or_else(|| stream_missing("status"))?;
        let mut sizes = attached.terminal_size().ok_or_else(|| stream_missing("resize channel"))?;
        // The first size before any output: the shell starts at the client's size.
        let _ = sizes.try_send(kube_size(size));
        let exit = async move {
            // Owned here: dropping this future (the client left) aborts the exec stream.
            let _attached = attached;
            match status.await {
                Some(status) => exit_code(&status),
                None => Err(DomainError::executor_unavailable("the pod exec ended without a status")),
            }
        };
        let resize = move |_: &mut _, size| {
            // A full channel means a resize is on its way; the next one carries the latest size.
            let _ = sizes.try_send(kube_size(size));
        };
        Ok(connect(stdout, stdin, resize, exit))
    }
}
