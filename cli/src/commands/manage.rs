//! `rdev keys …`, `rdev sessions …` and `rdev cancel`: the rest of the API, for people.

use serde_json::{Value, json};

use super::{lists::items, parse_env, segment};
use crate::{
    args::{Format, KeysCommand, SessionsCommand},
    client::Client,
    error::Result,
    output::{Column, field, print_list},
};

pub async fn keys(client: &Client, format: Format, command: KeysCommand) -> Result<u8> {
    match command {
        KeysCommand::List => {
            let answer = client.get_json("/api-keys", &[("limit", "500".into())]).await?;
            let columns: [Column; 6] = [
                ("ID", |k| field(k, "id")),
                ("NAME", |k| field(k, "name")),
                ("PREFIX", |k| field(k, "prefix")),
                ("SCOPES", |k| {
                    k["scopes"].as_array().map(|s| s.iter().map(|s| field(s, "")).collect()).unwrap_or_default()
                }),
                ("EXPIRES", |k| field(k, "expires_at")),
                ("LAST USED", |k| field(k, "last_used_at")),
            ];
            print_list(format, items(&answer, "api_keys"), &columns);
        }
        KeysCommand::Create { name, scopes, expires_at } => {
            let mut body = json!({"name": name, "scopes": scopes});
            if let Some(expires_at) = expires_at {
                body["expires_at"] = json!(expires_at);
            }
            let created = client.post_json("/api-keys", &body).await?;
            print_secret(format, &created);
        }
        KeysCommand::Rotate { id, grace } => {
            let body = grace.map_or_else(|| json!({}), |grace| json!({"grace_seconds": grace}));
            let rotated = client.post_json(&format!("/api-keys/{}/rotate", segment(&id)), &body).await?;
            print_secret(format, &rotated);
        }
        KeysCommand::Revoke { id } => {
            client.delete(&format!("/api-keys/{}", segment(&id))).await?;
            eprintln!("rdev: revoked {id}: everything it started is ending");
        }
    }
    Ok(0)
}

/// A new secret goes to stdout alone (to pipe into a secret store); the rest to stderr.
fn print_secret(format: Format, key: &Value) {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(key).unwrap_or_default()),
        Format::Table => {
            println!("{}", field(key, "key"));
            eprintln!("rdev: key {} ({}): the secret above is shown this once", field(key, "id"), field(key, "name"));
        }
    }
}

pub async fn sessions(client: &Client, format: Format, command: SessionsCommand) -> Result<u8> {
    match command {
        SessionsCommand::List { project } => {
            let mut query = vec![("limit", "500".to_owned())];
            query.extend(project.map(|project| ("project_id", project)));
            let answer = client.get_json("/sessions", &query).await?;
            let columns: [Column; 5] = [
                ("ID", |s| field(s, "id")),
                ("PROJECT", |s| field(s, "project_id")),
                ("WORKDIR", |s| field(s, "workdir")),
                ("LAST USED", |s| field(s, "last_used_at")),
                ("EXPIRES", |s| field(s, "expires_at")),
            ];
            print_list(format, items(&answer, "sessions"), &columns);
        }
        SessionsCommand::Create { project, env, workdir } => {
            let mut body = json!({"env": parse_env(&env)?});
            if let Some(workdir) = workdir {
                body["workdir"] = json!(workdir);
            }
            let session = client.post_json(&format!("/projects/{}/sessions", segment(&project)), &body).await?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&session).unwrap_or_default()),
                Format::Table => println!("{}", field(&session, "id")),
            }
        }
        SessionsCommand::Delete { id } => {
            client.delete(&format!("/sessions/{}", segment(&id))).await?;
            eprintln!("rdev: session {id} ended");
        }
    }
    Ok(0)
}

pub async fn cancel(client: &Client, id: &str) -> Result<u8> {
    let request = client.request(reqwest::Method::POST, &format!("/commands/{}/cancel", segment(id)));
    let command: Value = client.send(request).await?.json().await?;
    match field(&command, "status").as_str() {
        "cancelled" => eprintln!("rdev: {id} cancelled"),
        status => eprintln!("rdev: {id} is being stopped ({status}); `rdev ps` shows when it ends"),
    }
    Ok(0)
}
