//! The physical limit of a shell endpoint: how many `sh -c true` this machine spawns and reaps per
//! second, from N concurrent workers, spawned exactly the way rdev-api's local executor does it.
//!
//! Usage: `spawn-rate [WORKERS] [SECONDS]` (defaults 16 and 10). Prints one line:
//! `spawns=<n> seconds=<s> spawns_per_sec=<r> workers=<w> failures=<f>`, which `bench/run` parses;
//! exits non-zero if any spawn failed.
//!
//! Each spawn copies the executor's recipe: `tokio::process::Command`, `process_group(0)` and no
//! `pre_exec` (so std stays on the `posix_spawn` path), an explicit working directory, a cleared
//! environment plus the few variables the executor passes on, stdin null, stdout and stderr piped
//! and drained to EOF, then the exit status awaited. Only the executor's `killpg` of the finished
//! group (one syscall) is left out. Anything less would flatter the limit; anything more (HTTP,
//! JSON, auth, audit) is what the server adds on top.

use std::{
    path::Path,
    process::{ExitCode, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{io::AsyncReadExt, process::Command};

/// The variables rdev-api's local executor passes on from its own environment.
const INHERITED_ENV: &[&str] = &["PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR"];
const DEFAULT_WORKERS: usize = 16;
const DEFAULT_SECONDS: u64 = 10;

/// Reads a pipe to EOF, like the server's capture does, so the child never blocks on a full pipe
/// and the pipe's close is part of what we time.
async fn drain(pipe: Option<impl tokio::io::AsyncRead + Unpin>) {
    let Some(mut pipe) = pipe else { return };
    let mut chunk = vec![0u8; 16 * 1024];
    while let Ok(n) = pipe.read(&mut chunk).await {
        if n == 0 {
            break;
        }
    }
}

async fn spawn_once(dir: &Path, env: &[(String, String)]) -> std::io::Result<()> {
    let mut child = Command::new("/bin/sh")
        .args(["-c", "true"])
        .current_dir(dir)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let (status, (), ()) = tokio::join!(child.wait(), drain(stdout), drain(stderr));
    let status = status?;
    if !status.success() {
        return Err(std::io::Error::other(format!("sh -c true exited with {status}")));
    }
    Ok(())
}

fn arg<T: std::str::FromStr>(position: usize, default: T) -> Result<T, String> {
    match std::env::args().nth(position) {
        None => Ok(default),
        Some(text) => text.parse().map_err(|_| format!("argument {position}: not a number: {text}")),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let (workers, seconds) = match (arg(1, DEFAULT_WORKERS), arg(2, DEFAULT_SECONDS)) {
        (Ok(w), Ok(s)) if w > 0 && s > 0 => (w, s),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("spawn-rate: {e}\nusage: spawn-rate [WORKERS] [SECONDS]");
            return ExitCode::from(2);
        }
        _ => {
            eprintln!("spawn-rate: WORKERS and SECONDS must be positive");
            return ExitCode::from(2);
        }
    };
    let env: Arc<[(String, String)]> = INHERITED_ENV
        .iter()
        .filter_map(|name| std::env::var(name).ok().map(|value| ((*name).to_owned(), value)))
        .collect();
    // The executor runs in the project folder; any real folder costs the same chdir.
    let dir: Arc<Path> = match std::env::current_dir() {
        Ok(dir) => dir.into(),
        Err(e) => {
            eprintln!("spawn-rate: no working directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let done = Arc::new(AtomicBool::new(false));
    let spawns = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));

    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (dir, env, done) = (dir.clone(), env.clone(), done.clone());
            let (spawns, failures) = (spawns.clone(), failures.clone());
            tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    match spawn_once(&dir, &env).await {
                        Ok(()) => spawns.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            // Report the first few so a broken setup is visible, not just a low number.
                            if failures.fetch_add(1, Ordering::Relaxed) < 3 {
                                eprintln!("spawn-rate: {e}");
                            }
                            0
                        }
                    };
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    done.store(true, Ordering::Relaxed);
    // Spawns in flight when time ran out still count: workers finish them, and we divide by the
    // time they actually took, just as wrk counts requests completed in its window.
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let total = spawns.load(Ordering::Relaxed);
    let failed = failures.load(Ordering::Relaxed);
    println!(
        "spawns={total} seconds={elapsed:.3} spawns_per_sec={:.1} workers={workers} failures={failed} cpu_ticks={}",
        total as f64 / elapsed,
        own_cpu_ticks()
    );
    if failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// This process's CPU so far (utime + stime of /proc/self/stat, in clock ticks): what spawning
/// cost the spawner itself, for bench/run to set against a server's CPU per request.
fn own_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name: state is field 3 of the line, utime 14 and stime 15.
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    field(14) + field(15)
}
