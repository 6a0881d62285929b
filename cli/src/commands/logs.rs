//! `rdev logs ID [-f]`: a command's output log. Following resumes after a lost connection from
//! the last event received (`Last-Event-ID`), so nothing is shown twice and nothing is missed.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::Method;

use super::{run::Printer, segment};
use crate::{
    args::LogsArgs,
    client::Client,
    error::{CliError, Result},
    exit,
    output::field,
    sse,
};

/// How long a follower keeps trying to reach the server again.
const RECONNECT_FOR: Duration = Duration::from_secs(60);

pub async fn logs(client: &Client, args: &LogsArgs) -> Result<u8> {
    let id = segment(&args.id);
    if !args.follow {
        let command = client.get_json(&format!("/commands/{id}"), &[]).await?;
        if matches!(field(&command, "status").as_str(), "queued" | "running") {
            // What is stored so far, without waiting for more.
            for stream in ["stdout", "stderr"] {
                let request =
                    client.request(Method::GET, &format!("/commands/{id}/output")).query(&[("stream", stream)]);
                let bytes = client.send(request).await?.bytes().await?;
                let event =
                    sse::Event { id: None, kind: stream.into(), data: String::from_utf8_lossy(&bytes).into_owned() };
                Printer::default().show(&event).await?;
            }
            return Ok(0);
        }
        follow(client, &id).await?;
        return Ok(0);
    }
    let end = follow(client, &id).await?;
    exit::report(&end);
    Ok(exit::of_end(&end))
}

/// Shows the log to its `exit` event, reconnecting after the last event shown.
async fn follow(client: &Client, id: &str) -> Result<serde_json::Value> {
    let mut printer = Printer::default();
    let mut last: Option<u64> = None;
    let mut lost_since: Option<tokio::time::Instant> = None;
    let mut pause = Duration::from_millis(100);
    loop {
        let mut request = client.request(Method::GET, &format!("/commands/{id}/events"));
        if let Some(last) = last {
            request = request.header("Last-Event-ID", last.to_string());
        }
        match client.send(request).await {
            Ok(response) => {
                let mut events = sse::events(response);
                while let Some(Ok(event)) = events.next().await {
                    lost_since = None;
                    pause = Duration::from_millis(100);
                    if let Some(end) = printer.show(&event).await? {
                        return Ok(end);
                    }
                    last = event.id.or(last);
                }
            }
            Err(error) if !transient(&error) => return Err(error),
            Err(_) => {}
        }
        let since = *lost_since.get_or_insert_with(|| {
            eprintln!("rdev: lost the connection; resuming after event {}", last.unwrap_or(0));
            tokio::time::Instant::now()
        });
        if since.elapsed() > RECONNECT_FOR {
            return Err(CliError::Protocol(format!(
                "no connection for {} s; `rdev logs -f {id}` resumes",
                RECONNECT_FOR.as_secs()
            )));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// A network failure or an unavailable server is worth trying again; a refusal is not.
fn transient(error: &CliError) -> bool {
    match error {
        CliError::Http(_) => true,
        CliError::Api { status, .. } => matches!(status, 502..=504),
        _ => false,
    }
}
