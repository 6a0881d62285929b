//! `rdev projects`, `rdev ps`, `rdev audit`: what the key may see, as a table or JSON.

use std::collections::HashSet;

use serde_json::Value;

use crate::{
    args::{AuditArgs, Format, PsArgs},
    client::Client,
    error::Result,
    output::{Column, field, print_list},
};

pub async fn projects(client: &Client, format: Format) -> Result<u8> {
    let answer = client.get_json("/projects", &[]).await?;
    let columns: [Column; 4] = [
        ("ID", |p| field(p, "id")),
        ("STATUS", |p| field(p, "status")),
        ("EXECUTOR", |p| field(p, "executor")),
        ("POD", |p| {
            if p["pod"].is_string() { format!("{}/{}", field(p, "namespace"), field(p, "pod")) } else { "-".into() }
        }),
    ];
    print_list(format, items(&answer, "projects"), &columns);
    Ok(0)
}

/// Running commands, then queued ones, then the latest others: three asks, since the newest
/// page alone could miss an old command that still runs.
pub async fn commands(client: &Client, format: Format, args: &PsArgs) -> Result<u8> {
    let base: Vec<(&str, String)> = args.project.iter().map(|project| ("project_id", project.clone())).collect();
    let mut seen = HashSet::new();
    let mut shown = Vec::new();
    for (status, limit) in [(Some("running"), 500), (Some("queued"), 500), (None, args.limit)] {
        let mut query = base.clone();
        query.push(("limit", limit.to_string()));
        if let Some(status) = status {
            query.push(("status", status.to_owned()));
        }
        let answer = client.get_json("/commands", &query).await?;
        for command in items(&answer, "commands") {
            if seen.insert(field(command, "id")) {
                shown.push(command.clone());
            }
        }
    }
    let columns: [Column; 7] = [
        ("ID", |c| field(c, "id")),
        ("PROJECT", |c| field(c, "project_id")),
        ("STATUS", |c| field(c, "status")),
        ("EXIT", |c| field(c, "exit_code")),
        ("ORIGIN", |c| field(c, "origin")),
        ("CREATED", |c| field(c, "created_at")),
        ("COMMAND", |c| field(c, "command")),
    ];
    print_list(format, &shown, &columns);
    Ok(0)
}

pub async fn audit(client: &Client, format: Format, args: &AuditArgs) -> Result<u8> {
    let mut query = vec![("limit", args.limit.to_string())];
    for (name, value) in [("project_id", &args.project), ("outcome", &args.outcome), ("since", &args.since)] {
        if let Some(value) = value {
            query.push((name, value.clone()));
        }
    }
    let answer = client.get_json("/audit", &query).await?;
    let columns: [Column; 7] = [
        ("AT", |e| field(e, "at")),
        ("OUTCOME", |e| field(e, "outcome")),
        ("PROJECT", |e| field(e, "project_id")),
        ("EXIT", |e| field(e, "exit_code")),
        ("KEY", |e| field(e, "api_key_id")),
        ("COMMAND", |e| field(e, "command")),
        ("REASON", |e| field(e, "reason")),
    ];
    print_list(format, items(&answer, "entries"), &columns);
    Ok(0)
}

/// The array `name` of a list answer (empty if the server sent none).
pub fn items<'a>(answer: &'a Value, name: &str) -> &'a [Value] {
    answer[name].as_array().map(Vec::as_slice).unwrap_or_default()
}
