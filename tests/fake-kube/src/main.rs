//! The `fake-kube` binary: starts the fake API server for black-box tests, seeds pods, writes a
//! kubeconfig, prints where it listens and serves until SIGINT/SIGTERM.
//!
//! ```text
//! fake-kube [--listen ADDR] [--control-listen ADDR] [--kubeconfig PATH] [--namespace NS]
//!           [--pod NAME=PROJECT_ID]... [--pod-json JSON]... [--fault FAULT]
//! ```
//!
//! - `--listen` (default `127.0.0.1:0`): the Kubernetes API address.
//! - `--control-listen` (default `127.0.0.1:0`): an extra control-API-only address, reachable
//!   under every fault (the control API is also served on the API address under `/_fake/`).
//! - `--kubeconfig PATH`: write a kubeconfig for the API address, with context namespace `NS`.
//! - `--namespace NS` (default `default`): for the kubeconfig and for `--pod`.
//! - `--pod NAME=PROJECT_ID`: a running, ready rdev project pod in `NS`, with labels
//!   `rdev.orchard9.ai/project=true` and `rdev.orchard9.ai/project-id=PROJECT_ID`, container
//!   `main` and annotation `rdev.orchard9.ai/container=main`.
//! - `--pods N=PREFIX`: N such pods, `PREFIX-0`… with project ids `PREFIX-0`… (for benchmarks).
//! - `--pod-json JSON`: any pod, as the control API's `POST /_fake/pods` body.
//! - `--fault FAULT`: start with `none`, `http500`, `refuse`, `hang`, `drop_mid_stream` or
//!   `close_mid_stream`.
//!
//! Stdout gets exactly two lines once everything is ready: the API URL, then the control URL.
//! Each seeded pod's folder is listed on stderr (and by `GET /_fake/pods`).

// Request paths must not panic; tests (cfg(test)) may, per the workspace's clippy.toml.
#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use fake_kube::{FakeKube, Fault, PodSpec};
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{SignalKind, signal};

const USAGE: &str = "usage: fake-kube [--listen ADDR] [--control-listen ADDR] [--kubeconfig PATH] \
                     [--namespace NS] [--pod NAME=PROJECT_ID]... [--pods N=PREFIX] [--pod-json JSON]... [--fault FAULT]";

struct Args {
    listen: SocketAddr,
    control_listen: SocketAddr,
    kubeconfig: Option<PathBuf>,
    namespace: String,
    pods: Vec<String>,
    pod_json: Vec<String>,
    fault: Fault,
}

fn parse_args(mut raw: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    let localhost = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut args = Args {
        listen: localhost,
        control_listen: localhost,
        kubeconfig: None,
        namespace: "default".to_owned(),
        pods: Vec::new(),
        pod_json: Vec::new(),
        fault: Fault::None,
    };
    while let Some(flag) = raw.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = raw.next().with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--listen" => args.listen = value.parse().context("--listen")?,
            "--control-listen" => args.control_listen = value.parse().context("--control-listen")?,
            "--kubeconfig" => args.kubeconfig = Some(value.into()),
            "--namespace" => args.namespace = value,
            "--pod" => args.pods.push(value),
            "--pods" => {
                let (count, prefix) =
                    value.split_once('=').with_context(|| format!("--pods wants N=PREFIX\n{USAGE}"))?;
                let count: usize = count.parse().context("--pods N")?;
                args.pods.extend((0..count).map(|i| format!("{prefix}-{i}={prefix}-{i}")));
            }
            "--pod-json" => args.pod_json.push(value),
            "--fault" => args.fault = serde_json::from_value(value.into()).context("--fault")?,
            other => bail!("unknown flag {other}\n{USAGE}"),
        }
    }
    Ok(args)
}

fn project_pod(namespace: &str, flag: &str) -> anyhow::Result<PodSpec> {
    let Some((name, project_id)) = flag.split_once('=') else {
        bail!("--pod wants NAME=PROJECT_ID, got {flag:?}");
    };
    Ok(PodSpec::new(namespace, name)
        .label("rdev.orchard9.ai/project", "true")
        .label("rdev.orchard9.ai/project-id", project_id)
        .annotation("rdev.orchard9.ai/container", "main")
        .container("main"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args(std::env::args().skip(1))?;
    let kube = FakeKube::start_on(args.listen).await.context("binding --listen")?;
    let control = kube.serve_control(args.control_listen).await.context("binding --control-listen")?;
    let mut pods = Vec::new();
    for flag in &args.pods {
        pods.push(project_pod(&args.namespace, flag)?);
    }
    for json in &args.pod_json {
        pods.push(serde_json::from_str(json).with_context(|| format!("--pod-json {json}"))?);
    }
    for pod in pods {
        let label = format!("{}/{}", pod.namespace, pod.name);
        let dir = kube.add_pod(pod).with_context(|| format!("adding pod {label}"))?;
        if args.pods.len() <= 100 {
            eprintln!("fake-kube: pod {label} in {}", dir.display());
        }
    }
    if let Some(path) = &args.kubeconfig {
        kube.write_kubeconfig(path, &args.namespace).with_context(|| format!("writing {}", path.display()))?;
    }
    kube.set_fault(args.fault).await.context("--fault")?;
    // Print last, so a reader that sees the URLs can rely on pods and kubeconfig being in place.
    let mut stdout = tokio::io::stdout();
    stdout.write_all(format!("{}\nhttp://{control}\n", kube.url()).as_bytes()).await?;
    stdout.flush().await?;

    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    // Dropping the handle kills running exec commands and removes the pods' folders.
    drop(kube);
    Ok(())
}
