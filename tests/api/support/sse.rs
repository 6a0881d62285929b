//! Server-Sent Events read off a response, event by event.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<u64>,
    pub event: String,
    pub data: String,
}

pub struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    pub fn new(response: reqwest::Response) -> Self {
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        Self { response, buffer: String::new() }
    }

    /// The next event, skipping keep-alive comments; `None` at the end of the stream.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent { id: None, event: String::new(), data: String::new() };
                let mut data = Vec::new();
                for line in block.lines() {
                    let field = |name: &str| {
                        line.strip_prefix(&format!("{name}: ")).or_else(|| line.strip_prefix(&format!("{name}:")))
                    };
                    if let Some(name) = field("event") {
                        event.event = name.to_owned();
                    } else if let Some(id) = field("id") {
                        event.id = Some(id.parse().expect("a numeric id"));
                    } else if let Some(part) = field("data") {
                        data.push(part.to_owned());
                    }
                }
                if !event.event.is_empty() {
                    event.data = data.join("\n");
                    return Some(event);
                }
                continue;
            }
            let chunk = self.response.chunk().await.unwrap()?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Every event up to the end of the stream.
    pub async fn rest(&mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }
}
