//! Running a command for a tool: the route's event stream (`Accept: text/event-stream`) read
//! to its `exit`, each chunk sent on as a progress notification when the client asked for them,
//! the output kept as the route keeps it (a head and a tail within `max_output_bytes`).

use axum::{
    body::Body,
    http::{Method, header},
};
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use rmcp::{
    Peer, RoleServer,
    model::{JsonObject, ProgressNotificationParam, ProgressToken},
};
use serde_json::{Value, json};

use super::{Answer, Outcome, notify};
use crate::http::mcp::api_call::{Api, ToolError, refusal};

/// What a tool's command keeps of each stream unless it asks otherwise: enough for an agent to
/// act on, little enough for its context (the head and the tail, 16 KiB each).
pub const DEFAULT_OUTPUT_BYTES: u64 = 32 << 10;
/// The most of a chunk a progress notification carries.
const MAX_PROGRESS_MESSAGE: usize = 4 << 10;

/// Where progress notifications go: the client's token on the request's peer.
pub struct Progress {
    peer: Peer<RoleServer>,
    token: ProgressToken,
}

impl Progress {
    pub fn new(peer: Peer<RoleServer>, token: ProgressToken) -> Self {
        Self { peer, token }
    }

    pub async fn send(&self, step: f64, message: String) {
        let notification = ProgressNotificationParam::new(self.token.clone(), step).with_message(message);
        // A client that went away ends the call anyway; nothing to do with the error here.
        let _ = self.peer.notify_progress(notification).await;
    }
}

/// One stream's kept output: the head, and after a gap the tail.
#[derive(Default)]
struct Kept {
    head: String,
    tail: String,
    omitted: Option<Value>,
}

impl Kept {
    fn push(&mut self, text: &str) {
        if self.omitted.is_some() { self.tail.push_str(text) } else { self.head.push_str(text) }
    }
}

/// Runs `body` (a `/shell` request) at `path` and answers the execution with its output.
pub async fn run_streamed(api: Api<'_>, path: &str, mut body: JsonObject, progress: Option<Progress>) -> Outcome {
    body.entry("max_output_bytes").or_insert(json!(DEFAULT_OUTPUT_BYTES));
    let request = api
        .request(Method::POST, path)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "text/event-stream")
        .body(Body::from(Value::Object(body).to_string()));
    let response = api.accepted(request).await?;
    let (mut stdout, mut stderr) = (Kept::default(), Kept::default());
    let mut events = response.into_body().into_data_stream().eventsource();
    while let Some(event) = events.next().await {
        let event = event.map_err(|error| ToolError::new("INTERNAL", format!("the command's events: {error}")))?;
        let step = event.id.parse::<f64>().unwrap_or_default();
        match event.event.as_str() {
            "stdout" | "stderr" => {
                let kept = if event.event == "stdout" { &mut stdout } else { &mut stderr };
                kept.push(&event.data);
                notify(progress.as_ref(), step, format!("{}: {}", event.event, shortened(&event.data))).await;
            }
            "gap" => {
                let gap: Value = serde_json::from_str(&event.data).unwrap_or_default();
                let kept = if gap["stream"] == "stderr" { &mut stderr } else { &mut stdout };
                kept.omitted = Some(gap);
            }
            "exit" => {
                let exit: Value = serde_json::from_str(&event.data).unwrap_or_default();
                return Ok(answer(exit, stdout, stderr));
            }
            "error" => {
                return Err(refusal(axum::http::StatusCode::OK, event.data.as_bytes()));
            }
            _ => {}
        }
    }
    Err(ToolError::new("INTERNAL", "the command's event stream ended before its exit"))
}

fn shortened(text: &str) -> &str {
    if text.len() <= MAX_PROGRESS_MESSAGE {
        return text;
    }
    let mut end = MAX_PROGRESS_MESSAGE;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The execution as the tool answers it, and as a model reads it.
fn answer(mut exit: Value, stdout: Kept, stderr: Kept) -> Answer {
    let mut summary = match (&exit["exit_code"], exit["timed_out"].as_bool()) {
        (_, Some(true)) => "timed out and was killed".to_owned(),
        (Value::Number(code), _) => format!("exit code {code}"),
        _ => "ended without an exit code".to_owned(),
    };
    if let Some(error) = exit["error"].as_str() {
        summary.push_str(&format!(" ({error})"));
    }
    summary.push_str(&format!(" [command {}]", exit["execution_id"].as_str().unwrap_or("?")));
    for (name, kept) in [("stdout", &stdout), ("stderr", &stderr)] {
        if kept.head.is_empty() && kept.omitted.is_none() {
            continue;
        }
        summary.push_str(&format!("\n--- {name}\n{}", kept.head));
        if let Some(gap) = &kept.omitted {
            summary.push_str(&format!("\n[… {} bytes omitted …]\n{}", gap["bytes"], kept.tail));
        }
    }
    if let Value::Object(fields) = &mut exit {
        fields.insert("command_id".into(), fields.get("execution_id").cloned().unwrap_or_default());
        for (name, kept) in [("stdout", stdout), ("stderr", stderr)] {
            fields.insert(name.into(), json!(kept.head));
            fields.insert(format!("{name}_tail"), json!(kept.tail));
            fields.insert(format!("{name}_omitted"), kept.omitted.unwrap_or(Value::Null));
        }
    }
    Answer { summary: Some(summary), value: exit }
}
