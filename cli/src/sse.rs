//! Server-Sent Events from a response: the server's `stdout`, `stderr`, `gap`, `exit` and `error`
//! events, each with the `id` to resume after.

use eventsource_stream::Eventsource;
use futures_util::{Stream, StreamExt};
use reqwest::Response;

use crate::error::{CliError, Result};

#[derive(Debug)]
pub struct Event {
    /// The last `id:` seen, this event's or an earlier one's (as the SSE spec keeps it).
    pub id: Option<u64>,
    pub kind: String,
    pub data: String,
}

pub fn events(response: Response) -> impl Stream<Item = Result<Event>> + Unpin {
    response.bytes_stream().eventsource().map(|event| {
        let event = event.map_err(|error| CliError::Protocol(format!("event stream: {error}")))?;
        Ok(Event { id: event.id.parse().ok(), kind: event.event, data: event.data })
    })
}

/// What an `error` event or an `exit` event's JSON says.
pub fn json(event: &Event) -> Result<serde_json::Value> {
    serde_json::from_str(&event.data).map_err(|error| CliError::Protocol(format!("{} event: {error}", event.kind)))
}
