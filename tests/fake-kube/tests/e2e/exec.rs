//! Exec through kube-rs: real commands in the pod's folder, separate stdout/stderr, the
//! kubelet's status on channel 3, stdin with v5 close, rejections, and cleanup on early close.

use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{AttachParams, AttachedProcess};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::support::{NS, fake, pods};

fn params() -> AttachParams {
    AttachParams::default().container("main").stdout(true).stderr(true).stdin(false)
}

async fn read_all(reader: Option<impl AsyncRead + Unpin>) -> String {
    let mut text = String::new();
    reader.unwrap().read_to_string(&mut text).await.unwrap();
    text
}

/// Reads stdout and stderr to the end (concurrently, so neither pipe can stall the other), then
/// the status.
async fn finish(mut process: AttachedProcess) -> (String, String, Option<Status>) {
    let (stdout, stderr) = tokio::join!(read_all(process.stdout()), read_all(process.stderr()));
    let status = process.take_status().unwrap().await;
    (stdout, stderr, status)
}

async fn sh(kube: &fake_kube::FakeKube, script: &str) -> AttachedProcess {
    pods(kube).exec("pod-a", ["/bin/sh", "-c", script], &params()).await.unwrap()
}

#[tokio::test]
async fn success_runs_in_the_pod_folder() {
    let kube = fake().await;
    let (stdout, stderr, status) = finish(sh(&kube, "pwd; echo made > proof.txt").await).await;
    let dir = kube.pod_dir(NS, "pod-a").unwrap();
    assert_eq!(stdout.trim_end(), dir.to_str().unwrap());
    assert_eq!(stderr, "");
    assert_eq!(std::fs::read_to_string(dir.join("proof.txt")).unwrap(), "made\n");
    let status = status.unwrap();
    assert_eq!(status.status.as_deref(), Some("Success"));
    assert!(status.details.is_none());
}

#[tokio::test]
async fn nonzero_exit_reports_exit_code_and_keeps_streams_apart() {
    let kube = fake().await;
    let (stdout, stderr, status) = finish(sh(&kube, "echo out; echo err >&2; exit 3").await).await;
    assert_eq!(stdout, "out\n");
    assert_eq!(stderr, "err\n");
    let status = status.unwrap();
    assert_eq!(status.status.as_deref(), Some("Failure"));
    assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
    assert_eq!(
        status.message.as_deref(),
        Some(
            "command terminated with non-zero exit code: error executing command \
             [/bin/sh -c echo out; echo err >&2; exit 3], exit code 3"
        )
    );
    let causes = status.details.unwrap().causes.unwrap();
    assert_eq!(causes.len(), 1);
    assert_eq!(causes[0].reason.as_deref(), Some("ExitCode"));
    assert_eq!(causes[0].message.as_deref(), Some("3"));
}

#[tokio::test]
async fn large_interleaved_output_arrives_whole() {
    let kube = fake().await;
    let script = "i=0; while [ $i -lt 2000 ]; do echo line-$i; echo err-$i >&2; i=$((i+1)); done";
    let (stdout, stderr, status) = finish(sh(&kube, script).await).await;
    assert_eq!(stdout.lines().count(), 2000);
    assert_eq!(stderr.lines().last(), Some("err-1999"));
    assert_eq!(status.unwrap().status.as_deref(), Some("Success"));
}

#[tokio::test]
async fn stdin_is_fed_and_closed_over_v5() {
    let kube = fake().await;
    let mut process = pods(&kube).exec("pod-a", ["cat"], &params().stdin(true)).await.unwrap();
    let mut stdin = process.stdin().unwrap();
    stdin.write_all(b"hello through stdin").await.unwrap();
    // Shutting the writer down makes kube-rs send [255, 0] (v5 close of stdin): cat sees EOF.
    // (Merely dropping it does not: the pipe's read half keeps it open.)
    stdin.shutdown().await.unwrap();
    let (stdout, _, status) = finish(process).await;
    assert_eq!(stdout, "hello through stdin");
    assert_eq!(status.unwrap().status.as_deref(), Some("Success"));
}

/// An API server that speaks only v4 has no stdin close: kube-rs then closes the whole stream,
/// so the command is abandoned without a status. A reader of exactly N bytes gets its EOF anyway.
#[tokio::test]
async fn on_v4_stdin_cannot_be_half_closed_but_a_counted_read_ends() {
    let kube = fake().await;
    kube.set_v4_only(true);
    let mut counted =
        pods(&kube).exec("pod-a", ["/bin/sh", "-c", "head -c 5 | wc -c"], &params().stdin(true)).await.unwrap();
    let mut stdin = counted.stdin().unwrap();
    stdin.write_all(b"hello, and more").await.unwrap();
    let (stdout, _, status) = finish(counted).await;
    assert_eq!(stdout.trim(), "5");
    assert_eq!(status.unwrap().status.as_deref(), Some("Success"));
    drop(stdin);

    let mut cat = pods(&kube).exec("pod-a", ["cat"], &params().stdin(true)).await.unwrap();
    let mut stdin = cat.stdin().unwrap();
    stdin.write_all(b"lost").await.unwrap();
    stdin.shutdown().await.unwrap();
    // Closing the stream leaves nothing to report the status on: the fake abandons the command
    // (kube-rs may not even end the output streams then, so the wait for them is bounded).
    kube.wait_execs_finished().await;
    let status = tokio::time::timeout(Duration::from_secs(1), finish(cat)).await.ok().and_then(|(_, _, s)| s);
    assert!(status.is_none(), "v4 closes the stream, not stdin: {status:?}");
    kube.wait_execs_finished().await;
}

#[tokio::test]
async fn rejections_come_back_as_api_errors_before_upgrade() {
    let kube = fake().await;
    let api = pods(&kube);
    let Err(kube::Error::Api(status)) = api.exec("pod-a", ["true"], &params().container("sidecar")).await else {
        panic!("an unknown container must be refused")
    };
    assert_eq!((status.code, status.reason.as_str()), (400, "BadRequest"));
    assert_eq!(status.message, "container sidecar is not valid for pod pod-a");

    let Err(kube::Error::Api(status)) = api.exec("ghost", ["true"], &params()).await else {
        panic!("an unknown pod must be refused")
    };
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
    assert_eq!(kube.active_execs(), 0);
}

#[tokio::test]
async fn missing_program_is_a_failure_status() {
    let kube = fake().await;
    let process = pods(&kube).exec("pod-a", ["/no/such/program"], &params()).await.unwrap();
    let (_, _, status) = finish(process).await;
    let status = status.unwrap();
    assert_eq!(status.status.as_deref(), Some("Failure"));
    assert!(status.message.unwrap().contains("/no/such/program"));
}

/// Live (non-zombie) processes whose command line contains `marker`.
fn live_processes_with(marker: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        if !String::from_utf8_lossy(&cmdline).contains(marker) {
            continue;
        }
        // /proc/PID/stat: "pid (comm) STATE ..."; comm may hold spaces, so split after ')'.
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
        if !matches!(state, Some('Z') | None) {
            found.push(pid);
        }
    }
    found
}

#[tokio::test]
async fn client_closing_early_kills_the_whole_process_group() {
    let kube = fake().await;
    let marker = format!("fake-kube-marker-{}-{}", std::process::id(), line!());
    // A grandchild shell (only reachable through the process group) and the shell itself both
    // carry the marker in their command lines and would outlive the test by ten minutes.
    let script = format!("sh -c 'sleep 600; true {marker}' & echo started; sleep 600; true {marker}");
    let mut process = sh(&kube, &script).await;
    let mut stdout = process.stdout().unwrap();
    let mut started = [0u8; 8];
    stdout.read_exact(&mut started).await.unwrap();
    assert_eq!(&started, b"started\n");
    assert!(!live_processes_with(&marker).is_empty());
    assert_eq!(kube.active_execs(), 1);

    // What a client-side timeout does: drop the exec, which drops the WebSocket.
    drop(stdout);
    drop(process);
    tokio::time::timeout(Duration::from_secs(10), kube.wait_execs_finished()).await.unwrap();

    // The shell is reaped by the server; the grandchild dies asynchronously after SIGKILL and is
    // reaped by init, so give the kernel a bounded moment to finish it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !live_processes_with(&marker).is_empty() {
        assert!(Instant::now() < deadline, "left running: {:?}", live_processes_with(&marker));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `tty=true` through kube-rs: the shell is on a real terminal (`tty` names one, `stty size`
/// follows the resize channel), output comes on stdout only, and the exit is the status.
#[tokio::test]
async fn a_tty_exec_runs_on_a_terminal_that_resizes() {
    let kube = fake().await;
    let params = AttachParams::interactive_tty().container("main");
    let mut process = pods(&kube).exec("pod-a", ["/bin/sh"], &params).await.unwrap();
    assert!(process.stderr().is_none());
    let mut sizes = process.terminal_size().unwrap();
    sizes.try_send(kube::api::TerminalSize { width: 123, height: 45 }).unwrap();
    let mut stdin = process.stdin().unwrap();
    let mut stdout = process.stdout().unwrap();
    // The resize goes on its own channel: wait until the terminal has it before asking.
    stdin
        .write_all(b"while [ \"$(stty size)\" != '45 123' ]; do sleep 0.01; done; stty size; tty; exit 3\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stdout.read_to_end(&mut seen)).await.unwrap().unwrap();
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.contains("45 123\r\n"), "{seen:?}");
    assert!(seen.contains("/dev/pts/"), "{seen:?}");
    let status = process.take_status().unwrap().await.unwrap();
    assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
    assert_eq!(status.details.unwrap().causes.unwrap()[0].message.as_deref(), Some("3"));
}
