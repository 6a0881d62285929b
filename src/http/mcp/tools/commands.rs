//! The command tools: projects, running now, the queue, sessions.

use std::time::Duration;

use axum::http::Method;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use rmcp::model::JsonObject;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::{Answer, Outcome, Progress, ToolSpec, parse, run::run_streamed, schema_of, take_string, tool, with_string};
use crate::{
    domain::{CreateSessionRequest, EnqueueRequest, Scope, ShellRequest},
    http::mcp::api_call::{Api, ToolError, segment, with_query},
};

const PROJECT: &str = "The project's id, as list_projects gives it.";
/// The most output one get_command answers; the rest comes with `after`.
const MAX_EVENT_BYTES: usize = 64 << 10;
/// How long get_command reads a running command's output when it is not asked to wait.
const BRIEF_WAIT: Duration = Duration::from_millis(250);

pub fn tools() -> Vec<ToolSpec> {
    vec![
        tool(
            "list_projects",
            Scope::ProjectsRead,
            "List the projects (development environments) this key may use: their ids and status.",
            schema_of::<NoArguments>(),
            true,
        ),
        tool(
            "run_command",
            Scope::CommandsExecute,
            "Run a shell command (/bin/sh -c) in a project and wait for it. Answers the exit code, stdout and stderr \
             (for long output its head and its tail, with the bytes omitted between), and the command's id. \
             With a progress token, the output also arrives as progress notifications while it runs. \
             Output beyond max_output_bytes per stream (default 32768) is dropped from the middle.",
            with_string(schema_of::<ShellRequest>(), "project", PROJECT),
            false,
        ),
        tool(
            "queue_command",
            Scope::CommandsExecute,
            "Queue a shell command to run in the background (priority 0-9, 9 first); answers its id at once. \
             Follow it with get_command; it runs whether or not anyone watches.",
            with_string(schema_of::<EnqueueRequest>(), "project", PROJECT),
            false,
        ),
        tool(
            "get_command",
            Scope::CommandsRead,
            "A command's status and output events. Pass the next_after of the previous answer as after to get \
             only what came since (resumable); wait_secs waits that long for more output of a running command.",
            schema_of::<GetCommand>(),
            true,
        ),
        tool(
            "cancel_command",
            Scope::CommandsExecute,
            "Cancel a queued or running command (one started by queue_command).",
            schema_of::<CommandId>(),
            false,
        ),
        tool(
            "create_session",
            Scope::CommandsExecute,
            "Create a session in a project: run_in_session commands then keep its folder (cd) and exported variables \
             from one to the next. Answers the session, whose id run_in_session takes.",
            with_string(schema_of::<CreateSessionRequest>(), "project", PROJECT),
            false,
        ),
        tool(
            "run_in_session",
            Scope::CommandsExecute,
            "Run a shell command in a session: it starts in the session's folder with its variables, and the session \
             keeps where it cd'd and what it exported. Answers as run_command does, with the session as it left it.",
            with_string(schema_of::<ShellRequest>(), "session_id", "The session's id, from create_session."),
            false,
        ),
    ]
}

/// No arguments.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArguments {}

/// A command by its id.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandId {
    /// The command's id (run_command's command_id, queue_command's id).
    id: String,
}

/// Which command, and from where in its output.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GetCommand {
    /// The command's id (run_command's command_id, queue_command's id).
    id: String,
    /// Only output events after this one: the next_after of the previous answer (default: from the start).
    after: Option<u64>,
    /// 0 to 60: how long to wait for more output of a running command (default 0).
    #[schema(minimum = 0, maximum = 60)]
    wait_secs: Option<u64>,
}

pub async fn list_projects(api: Api<'_>) -> Outcome {
    Ok(api.json(Method::GET, "/projects", None).await?.into())
}

pub async fn run_command(api: Api<'_>, mut arguments: JsonObject, progress: Option<Progress>) -> Outcome {
    let project = take_string(&mut arguments, "project")?;
    run_streamed(api, &format!("/projects/{}/shell", segment(&project)), arguments, progress).await
}

pub async fn run_in_session(api: Api<'_>, mut arguments: JsonObject, progress: Option<Progress>) -> Outcome {
    let session = take_string(&mut arguments, "session_id")?;
    run_streamed(api, &format!("/sessions/{}/shell", segment(&session)), arguments, progress).await
}

pub async fn queue_command(api: Api<'_>, mut arguments: JsonObject) -> Outcome {
    let project = take_string(&mut arguments, "project")?;
    let path = format!("/projects/{}/commands", segment(&project));
    Ok(api.json(Method::POST, &path, Some(&Value::Object(arguments))).await?.into())
}

pub async fn create_session(api: Api<'_>, mut arguments: JsonObject) -> Outcome {
    let project = take_string(&mut arguments, "project")?;
    let path = format!("/projects/{}/sessions", segment(&project));
    Ok(api.json(Method::POST, &path, Some(&Value::Object(arguments))).await?.into())
}

pub async fn cancel_command(api: Api<'_>, arguments: JsonObject) -> Outcome {
    let CommandId { id } = parse(arguments)?;
    Ok(api.json(Method::POST, &format!("/commands/{}/cancel", segment(&id)), None).await?.into())
}

/// The command (without the output fields, which come as events) and its output events after
/// `after`: all there are for a finished command; for a running one what comes within the wait.
pub async fn get_command(api: Api<'_>, arguments: JsonObject) -> Outcome {
    let GetCommand { id, after, wait_secs } = parse(arguments)?;
    let wait = match wait_secs {
        Some(secs @ 0..=60) => Duration::from_secs(secs).max(BRIEF_WAIT),
        Some(_) => return Err(ToolError::invalid("wait_secs", "must be 0 to 60")),
        None => BRIEF_WAIT,
    };
    let mut command = api.json(Method::GET, &format!("/commands/{}", segment(&id)), None).await?;
    if let Value::Object(fields) = &mut command {
        for name in ["stdout", "stderr"] {
            fields.remove(name);
        }
    }
    let path =
        with_query(&format!("/commands/{}/events", segment(&id)), &[("after", after.map(|after| after.to_string()))]);
    let response = api.accepted(api.request(Method::GET, &path).body(axum::body::Body::empty())).await?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut events = response.into_body().into_data_stream().eventsource();
    let (mut output, mut bytes, mut last, mut complete) = (Vec::new(), 0, after.unwrap_or(0), false);
    while bytes < MAX_EVENT_BYTES {
        let Ok(Some(Ok(event))) = tokio::time::timeout_at(deadline, events.next()).await else { break };
        match event.event.as_str() {
            "stdout" | "stderr" => {
                bytes += event.data.len();
                output.push(json!({"id": event.id.parse::<u64>().ok(), "stream": event.event, "text": event.data}));
            }
            "gap" => output.push(
                json!({"id": event.id.parse::<u64>().ok(), "gap": serde_json::from_str::<Value>(&event.data).ok()}),
            ),
            "exit" => {
                complete = true;
                command = serde_json::from_str(&event.data).unwrap_or(command);
            }
            _ => {}
        }
        last = event.id.parse().unwrap_or(last);
        if complete {
            break;
        }
    }
    let value = json!({"command": command, "output": output, "next_after": last, "complete": complete});
    Ok(Answer { summary: None, value })
}
