//! A `WebhookSender` that answers from a script (then 200), remembers every request, and can
//! hold requests until a test lets them through, counting how many were in flight at once.

use std::{
    collections::VecDeque,
    sync::atomic::{AtomicUsize, Ordering},
};

use async_trait::async_trait;
use rdev_api::ports::{WebhookRequest, WebhookResponse, WebhookSender};
use tokio::sync::Semaphore;

use super::Watched;

#[derive(Default)]
pub struct ScriptedSender {
    replies: std::sync::Mutex<VecDeque<WebhookResponse>>,
    pub sent: Watched<Vec<WebhookRequest>>,
    gate: Option<Semaphore>,
    in_flight: AtomicUsize,
    pub most_in_flight: AtomicUsize,
}

impl ScriptedSender {
    /// Answers these statuses in turn (`0` for a request that got no answer), then 200.
    pub fn answering(statuses: &[u16]) -> Self {
        let replies = statuses
            .iter()
            .map(|&status| match status {
                0 => WebhookResponse { status_code: None, error: Some("connection refused".into()), body: None },
                code => WebhookResponse { status_code: Some(code), error: None, body: Some("ok".into()) },
            })
            .collect();
        Self { replies: std::sync::Mutex::new(replies), ..Self::default() }
    }

    /// Holds every request until `let_through` admits it.
    pub fn gated(mut self) -> Self {
        self.gate = Some(Semaphore::new(0));
        self
    }

    pub fn let_through(&self, n: usize) {
        self.gate.as_ref().expect("a gated sender").add_permits(n);
    }

    pub fn count(&self) -> usize {
        self.sent.read(Vec::len)
    }
}

#[async_trait]
impl WebhookSender for ScriptedSender {
    async fn send(&self, request: &WebhookRequest) -> WebhookResponse {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        self.sent.change(|sent| sent.push(request.clone()));
        if let Some(gate) = &self.gate {
            gate.acquire().await.expect("gate open").forget();
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let scripted = self.replies.lock().unwrap().pop_front();
        scripted.unwrap_or(WebhookResponse { status_code: Some(200), error: None, body: None })
    }
}
