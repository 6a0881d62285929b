//! Connecting to the cluster: the kubeconfig named by `KUBECONFIG` (or `--kubeconfig`), else the
//! in-cluster service account, else `~/.kube/config`.

use std::{path::Path, time::Duration};

use anyhow::Context as _;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Two clients: API calls get a short read timeout so a hung API server fails fast (and counts
/// for the breaker); exec streams get none, since a quiet command may run for an hour.
#[derive(Clone)]
pub struct KubeClients {
    pub api: kube::Client,
    pub exec: kube::Client,
}

impl KubeClients {
    pub async fn connect(kubeconfig: Option<&Path>, api_timeout: Duration) -> anyhow::Result<Self> {
        let mut config = match kubeconfig {
            Some(path) => {
                let file =
                    Kubeconfig::read_from(path).with_context(|| format!("reading KUBECONFIG {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                    .await
                    .with_context(|| format!("loading KUBECONFIG {}", path.display()))?
            }
            None => kube::Config::infer().await.context("finding Kubernetes credentials (in-cluster or KUBECONFIG)")?,
        };
        config.connect_timeout = Some(api_timeout);
        let mut api_config = config.clone();
        api_config.read_timeout = Some(api_timeout);
        api_config.write_timeout = Some(api_timeout);
        config.read_timeout = None;
        Ok(Self {
            api: kube::Client::try_from(api_config).context("building the Kubernetes client")?,
            exec: kube::Client::try_from(config).context("building the Kubernetes exec client")?,
        })
    }
}
