//! Every shell example in README.md and docs/*.md runs, in the order a reader meets it, against
//! a fresh server (the binary, started as a newcomer starts it), exactly as printed but for the
//! port: `localhost:8080` becomes the test server's.
//!
//! What a document may say to the test, on the line before a fence (HTML comments, which no
//! reader sees):
//! - `<!-- docs-test: skip, <why> -->`: the block is not run (it starts the server the examples
//!   use, needs a cluster, is a synopsis rather than a script).
//! - `<!-- docs-test: exit <N> -->`: the block is expected to end with status N.
//!
//! A fenced `output` block right after a shell block is what that block prints: each of its
//! lines must appear in the block's stdout, in order, `…` matching anything within a line.
//!
//! Each document is read at one terminal, from the server's folder with the admin key it printed
//! in `KEY`: variables set by a block (each runs with `set -a`) and the working directory carry on
//! to the next one. `curl` fails on an HTTP error (`--fail-with-body`), so a refused request is a
//! failed example, `rdev-api` and `rdev` are on the `PATH`, and `rdev` keeps its login in a
//! config folder of the document's own.

use std::{path::Path, time::Duration};

use crate::support::process::{BIN, ServerProcess};

/// The documents, in the order a reader meets them: the README, then every `docs/*.md` (a new
/// one is read without being named here; the runbooks under `docs/runbooks/` are for operators
/// with a cluster, and hold kubectl, not examples).
fn documents() -> Vec<String> {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let mut names: Vec<String> = std::fs::read_dir(&docs)
        .expect("the docs folder")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    // api.md first: it is where the README sends a reader, then the rest by name.
    names.sort_by_key(|name| (name != "docs/api.md", name.clone()));
    std::iter::once("README.md".to_owned()).chain(names).collect()
}

/// How long one example may run.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, PartialEq)]
enum Expect {
    Run { exit: i32 },
    Skip,
}

#[derive(Debug)]
struct Example {
    /// `file:line` of the fence, for messages.
    place: String,
    script: String,
    expect: Expect,
    /// The lines of the `output` block that follows, if any.
    output: Option<Vec<String>>,
}

/// The shell blocks of a Markdown document, with their markers and shown output.
fn examples(name: &str, text: &str) -> Vec<Example> {
    let lines: Vec<&str> = text.lines().collect();
    let mut examples: Vec<Example> = Vec::new();
    let mut index = 0;
    while index < lines.len() {
        let Some(info) = lines[index].strip_prefix("```") else {
            index += 1;
            continue;
        };
        let info = info.trim();
        let start = index;
        let end = (start + 1..lines.len()).find(|&i| lines[i].starts_with("```")).unwrap_or(lines.len());
        let body = lines[start + 1..end].join("\n");
        index = end + 1;
        if info == "output" {
            let previous = examples.last_mut().filter(|e| e.output.is_none());
            let previous =
                previous.unwrap_or_else(|| panic!("{name}:{}: an output block follows no example", start + 1));
            previous.output = Some(body.lines().map(str::to_owned).filter(|l| !l.trim().is_empty()).collect());
            continue;
        }
        if !matches!(info, "sh" | "bash" | "shell") {
            continue;
        }
        let marker = start.checked_sub(1).map(|i| lines[i].trim()).unwrap_or_default();
        let expect = match marker.strip_prefix("<!-- docs-test:").and_then(|m| m.strip_suffix("-->")).map(str::trim) {
            None => Expect::Run { exit: 0 },
            Some(m) if m.starts_with("skip,") => Expect::Skip,
            Some(m) => match m.strip_prefix("exit ").and_then(|n| n.trim().parse().ok()) {
                Some(exit) => Expect::Run { exit },
                None => panic!("{name}:{start}: unknown marker {marker:?}"),
            },
        };
        examples.push(Example { place: format!("{name}:{}", start + 1), script: body, expect, output: None });
    }
    examples
}

/// Whether `expected`'s lines appear in `stdout`, in order (`…` matches anything in a line).
fn shows(stdout: &str, expected: &[String]) -> Result<(), String> {
    let mut lines = stdout.lines();
    for wanted in expected {
        let parts: Vec<&str> = wanted.trim().split('…').collect();
        let matches = |line: &str| {
            let mut rest = line;
            parts.iter().all(|part| match rest.find(part) {
                Some(at) => {
                    rest = &rest[at + part.len()..];
                    true
                }
                None => false,
            })
        };
        if !lines.any(matches) {
            return Err(format!("the output lacks {wanted:?}"));
        }
    }
    Ok(())
}

/// Runs one example in the reader's terminal state (kept in `state`), and checks it.
async fn run(example: &Example, port: u16, server_dir: &Path, state: &Path) -> Result<(), String> {
    let Expect::Run { exit } = example.expect else { return Ok(()) };
    let script = example.script.replace("localhost:8080", &format!("localhost:{port}"));
    let prelude = format!(
        "set -a\n. {env}\ncd \"$(cat {pwd})\"\n\
         trap 'export -p > {env}; pwd > {pwd}' EXIT\n\
         curl() {{ command curl --fail-with-body --silent --show-error \"$@\"; }}\n\
         set -eo pipefail\n",
        env = state.join("env").display(),
        pwd = state.join("pwd").display(),
    );
    let bin_dir = Path::new(BIN).parent().unwrap_or(Path::new("/"));
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let mut command = tokio::process::Command::new("bash");
    command
        .arg("-c")
        .arg(format!("{prelude}{script}\n"))
        .current_dir(server_dir)
        .env("PATH", path)
        // `rdev login` stores its login in the reader's config folder: this document's own.
        .env("XDG_CONFIG_HOME", state.join("config"))
        .stdin(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    let child = command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn();
    let child = child.map_err(|e| format!("bash: {e}"))?;
    let group = child.id().map(|pid| nix::unistd::Pid::from_raw(pid as i32));
    let output = match tokio::time::timeout(BLOCK_TIMEOUT, child.wait_with_output()).await {
        Ok(output) => output.map_err(|e| format!("bash: {e}"))?,
        Err(_) => {
            // Everything the example started goes with it.
            if let Some(group) = group {
                let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            }
            return Err(format!("still running after {BLOCK_TIMEOUT:?}"));
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report = |why: String| format!("{why}\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
    if output.status.code() != Some(exit) {
        return Err(report(format!("exit status {:?}, expected {exit}", output.status.code())));
    }
    if let Some(expected) = &example.output {
        shows(&stdout, expected).map_err(report)?;
    }
    Ok(())
}

/// One document, top to bottom, at one terminal, against a server of its own.
async fn read_through(name: &str) -> (usize, usize) {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(name)).expect("the document");
    let examples = examples(name, &text);
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]).await;
    let banner = server.wait_for_line("X-API-Key: rdev_").await;
    let key = banner.split("X-API-Key: ").nth(1).and_then(|rest| rest.split('"').next()).unwrap_or_default();
    let port: u16 = server.addr.rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port");
    let state = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        state.path().join("env"),
        format!("export KEY={key}\nexport HOME={}\nexport LC_ALL=C.UTF-8\n", home.path().display()),
    )
    .unwrap();
    std::fs::write(state.path().join("pwd"), dir.path().display().to_string()).unwrap();
    let mut ran = 0;
    for example in &examples {
        if let Err(why) = run(example, port, dir.path(), state.path()).await {
            panic!("{} as printed:\n{}\n\nfailed: {why}", example.place, example.script);
        }
        ran += usize::from(example.expect != Expect::Skip);
    }
    (ran, examples.len() - ran)
}

#[tokio::test]
async fn every_shell_example_runs_as_printed() {
    let mut ran = 0;
    let mut skipped = 0;
    // `RDEV_DOCS_ONLY=docs/api.md` reads one document, while writing it.
    let only = std::env::var("RDEV_DOCS_ONLY").ok();
    for name in documents().iter().filter(|name| only.as_deref().is_none_or(|only| only == name.as_str())) {
        let (r, s) = read_through(name).await;
        eprintln!("{name}: {r} examples ran, {s} marked not to run");
        ran += r;
        skipped += s;
    }
    eprintln!("in all: {ran} examples ran, {skipped} marked not to run");
    assert!(ran > 0);
}

#[test]
fn markers_and_output_blocks_are_read() {
    let doc = "x\n```sh\necho a\n```\n```output\na\n```\n<!-- docs-test: skip, a synopsis -->\n```sh\nrdev-api\n```\n\
               <!-- docs-test: exit 22 -->\n```bash\ncurl -f x\n```\n```json\n{}\n```\n";
    let found = examples("doc.md", doc);
    assert_eq!(found.len(), 3);
    assert_eq!(
        (found[0].expect == Expect::Run { exit: 0 }, found[0].output.as_deref()),
        (true, Some(&["a".to_owned()][..]))
    );
    assert_eq!(found[1].expect, Expect::Skip);
    assert_eq!(found[2].expect, Expect::Run { exit: 22 });
    assert!(shows("id: 12 ok\nnext\n", &["id: … ok".into(), "next".into()]).is_ok());
    assert!(shows("next\nid: 12 ok\n", &["next".into(), "nope".into()]).is_err());
}
