//! `rdev run PROJECT -- COMMAND…`: the command's stdout to stdout and stderr to stderr as they
//! come (the server's event stream), then its exit code as rdev's own. Ctrl-C closes the stream,
//! which makes the server kill the command and everything it started.

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{parse_env, segment};
use crate::{
    args::RunArgs,
    client::Client,
    error::{CliError, Result},
    exit,
    output::field,
    sse::{self, Event},
};

/// More than any server's stdin limit is worth reading: the server says no past its own.
const MAX_STDIN_BYTES: u64 = 16 << 20;

pub async fn run(client: &Client, args: &RunArgs) -> Result<u8> {
    let body = request_body(args).await?;
    if args.detach {
        if args.session.is_some() {
            return Err(CliError::Usage(
                "-d queues a command, and a session's commands are not queued: drop one".into(),
            ));
        }
        let mut body = body;
        if let Some(priority) = args.priority {
            body["priority"] = json!(priority);
        }
        let queued = client.post_json(&format!("/projects/{}/commands", segment(&args.project)), &body).await?;
        println!("{}", field(&queued, "id"));
        return Ok(0);
    }
    let path = match &args.session {
        Some(session) => {
            let found = client.get_json(&format!("/sessions/{}", segment(session)), &[]).await?;
            if found["project_id"] != args.project.as_str() {
                return Err(CliError::Usage(format!(
                    "session {session} is in project {}",
                    field(&found, "project_id")
                )));
            }
            format!("/sessions/{}/shell", segment(session))
        }
        None => format!("/projects/{}/shell", segment(&args.project)),
    };
    let request = client.request(Method::POST, &path).header("Accept", "text/event-stream").json(&body);
    let response = client.send(request).await?;
    let mut events = sse::events(response);
    let mut printer = Printer::default();
    // One listener for the whole run, so a Ctrl-C while output is being written is not lost.
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(event) => {
                    if let Some(end) = printer.show(&event?).await? {
                        exit::report(&end);
                        return Ok(exit::of_end(&end));
                    }
                }
                None => return Err(CliError::Protocol("the stream ended before the command did".into())),
            },
            _ = &mut interrupted => {
                drop(events);
                eprintln!("\nrdev: cancelled: the server kills the command");
                return Ok(exit::CANCELLED);
            }
        }
    }
}

async fn request_body(args: &RunArgs) -> Result<Value> {
    let mut body = json!({"command": args.command.join(" ")});
    if let Some(timeout) = args.timeout {
        body["timeout_secs"] = json!(timeout);
    }
    if let Some(workdir) = &args.workdir {
        body["workdir"] = json!(workdir);
    }
    if !args.env.is_empty() {
        body["env"] = json!(parse_env(&args.env)?);
    }
    if args.stdin {
        let mut input = Vec::new();
        tokio::io::stdin()
            .take(MAX_STDIN_BYTES + 1)
            .read_to_end(&mut input)
            .await
            .map_err(CliError::io("reading stdin"))?;
        if input.len() as u64 > MAX_STDIN_BYTES {
            return Err(CliError::Usage(format!(
                "stdin is over {} MiB: copy it as a file (`rdev cp`)",
                MAX_STDIN_BYTES >> 20
            )));
        }
        body["stdin_base64"] = json!(BASE64.encode(&input));
    }
    Ok(body)
}

/// Writes a command's output events where they belong: shared by `run` and `logs`.
#[derive(Default)]
pub struct Printer {
    stdout: Option<tokio::io::Stdout>,
    stderr: Option<tokio::io::Stderr>,
}

impl Printer {
    /// Shows one event; the end (the `exit` event's execution or command) once it comes.
    pub async fn show(&mut self, event: &Event) -> Result<Option<Value>> {
        match event.kind.as_str() {
            "stdout" => {
                let out = self.stdout.get_or_insert_with(tokio::io::stdout);
                write(out, event.data.as_bytes()).await?;
            }
            "stderr" => {
                let err = self.stderr.get_or_insert_with(tokio::io::stderr);
                write(err, event.data.as_bytes()).await?;
            }
            "gap" => {
                let gap = sse::json(event)?;
                eprintln!("\nrdev: [{} bytes of {} omitted here]", field(&gap, "bytes"), field(&gap, "stream"));
            }
            "exit" => return Ok(Some(sse::json(event)?)),
            "error" => {
                let body = event.data.as_bytes();
                return Err(CliError::from_body(0, body));
            }
            _ => {}
        }
        Ok(None)
    }
}

async fn write(out: &mut (impl AsyncWriteExt + Unpin), bytes: &[u8]) -> Result<()> {
    out.write_all(bytes).await.map_err(CliError::io("writing output"))?;
    out.flush().await.map_err(CliError::io("writing output"))
}
