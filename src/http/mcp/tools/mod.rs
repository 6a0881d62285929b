//! The tools: each one a route of the API, its input schema generated from the request type
//! that route validates (through utoipa, as the OpenAPI document is), listed only for keys
//! whose scopes allow it. A refusal is a tool error carrying the API's code and message.

mod commands;
mod files;
mod run;

use std::sync::Arc;

use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool, ToolAnnotations};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use utoipa::PartialSchema;

use super::api_call::{Api, ToolError};
use crate::domain::{ApiKey, Scope};

pub use run::Progress;

/// One tool: what it is called, what it needs, how it is described to an agent.
pub struct ToolSpec {
    pub scope: Scope,
    pub tool: Tool,
}

pub struct Catalog(Vec<ToolSpec>);

impl Catalog {
    pub fn new() -> Self {
        let mut tools = commands::tools();
        tools.extend(files::tools());
        Self(tools)
    }

    /// The tools `key` may call.
    pub fn allowed(&self, key: &ApiKey) -> Vec<Tool> {
        self.0.iter().filter(|spec| key.allows(spec.scope)).map(|spec| spec.tool.clone()).collect()
    }

    pub fn find(&self, name: &str) -> Option<&ToolSpec> {
        self.0.iter().find(|spec| spec.tool.name == name)
    }
}

/// Runs the tool through the API; its result, or the API's refusal as a tool error.
pub async fn call(spec: &ToolSpec, api: Api<'_>, arguments: JsonObject, progress: Option<Progress>) -> CallToolResult {
    let outcome = match spec.tool.name.as_ref() {
        "list_projects" => commands::list_projects(api).await,
        "run_command" => commands::run_command(api, arguments, progress).await,
        "queue_command" => commands::queue_command(api, arguments).await,
        "get_command" => commands::get_command(api, arguments).await,
        "cancel_command" => commands::cancel_command(api, arguments).await,
        "create_session" => commands::create_session(api, arguments).await,
        "run_in_session" => commands::run_in_session(api, arguments, progress).await,
        "list_files" => files::list_files(api, arguments).await,
        "read_file" => files::read_file(api, arguments).await,
        "write_file" => files::write_file(api, arguments).await,
        "delete_file" => files::delete_file(api, arguments).await,
        other => Err(ToolError::new("NOT_FOUND", format!("no tool is named {other}"))),
    };
    match outcome {
        Ok(Answer { summary, value }) => {
            let mut result = CallToolResult::structured(value);
            if let Some(summary) = summary {
                result.content = vec![ContentBlock::text(summary)];
            }
            result
        }
        Err(error) => {
            let mut result = CallToolResult::structured_error(error.0.clone());
            result.content = vec![ContentBlock::text(error.summary())];
            result
        }
    }
}

/// A tool's answer: the JSON an agent's code reads, and optionally the text a model reads (the
/// JSON itself otherwise).
pub struct Answer {
    pub summary: Option<String>,
    pub value: Value,
}

impl From<Value> for Answer {
    fn from(value: Value) -> Self {
        Self { summary: None, value }
    }
}

type Outcome = Result<Answer, ToolError>;

/// A tool definition.
fn tool(name: &'static str, scope: Scope, description: &'static str, schema: JsonObject, read_only: bool) -> ToolSpec {
    let mut annotations = ToolAnnotations::default();
    annotations.read_only_hint = Some(read_only);
    ToolSpec { scope, tool: Tool::new(name, description, Arc::new(schema)).with_annotations(annotations) }
}

/// The JSON Schema of a request type, as the OpenAPI document has it.
fn schema_of<T: PartialSchema>() -> JsonObject {
    match serde_json::to_value(T::schema()) {
        Ok(Value::Object(schema)) => schema,
        _ => JsonObject::new(),
    }
}

/// `schema` with one more required string property, first.
fn with_string(schema: JsonObject, name: &str, description: &str) -> JsonObject {
    let mut properties = JsonObject::new();
    properties.insert(name.into(), json!({"type": "string", "description": description}));
    if let Some(Value::Object(rest)) = schema.get("properties") {
        properties.extend(rest.clone());
    }
    let mut required = vec![json!(name)];
    if let Some(Value::Array(rest)) = schema.get("required") {
        required.extend(rest.iter().cloned());
    }
    let mut schema = schema;
    schema.insert("type".into(), json!("object"));
    schema.insert("properties".into(), Value::Object(properties));
    schema.insert("required".into(), Value::Array(required));
    schema
}

/// Takes the string argument `name` out of `arguments` (the rest is the route's body).
fn take_string(arguments: &mut JsonObject, name: &str) -> Result<String, ToolError> {
    match arguments.remove(name) {
        Some(Value::String(text)) if !text.is_empty() => Ok(text),
        Some(_) => Err(ToolError::invalid(name, "must be a non-empty string")),
        None => Err(ToolError::invalid(name, "is required")),
    }
}

/// The arguments as the tool's own input type (unknown fields refused, as the API does).
fn parse<T: DeserializeOwned>(arguments: JsonObject) -> Result<T, ToolError> {
    serde_json::from_value(Value::Object(arguments))
        .map_err(|error| ToolError::new("VALIDATION_FAILED", format!("invalid arguments: {error}")))
}

/// Sends a progress notification, if the client asked for them.
async fn notify(progress: Option<&Progress>, step: f64, message: String) {
    if let Some(progress) = progress {
        progress.send(step, message).await;
    }
}
