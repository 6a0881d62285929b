//! What can go wrong, each said in one line: the API's own code and message where it answered.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CliError {
    /// The server answered with its JSON error.
    #[error("{code}: {message}")]
    Api { status: u16, code: String, message: String },
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error("terminal connection: {0}")]
    WebSocket(#[from] Box<tokio_tungstenite::tungstenite::Error>),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("not logged in: run `rdev login URL`, or set RDEV_URL and RDEV_API_KEY")]
    NotLoggedIn,
    #[error("{0}")]
    Usage(String),
    /// The server said something this client does not understand.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
}

impl CliError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }

    /// The error of a refused request, from its status and JSON body.
    pub fn from_body(status: u16, body: &[u8]) -> Self {
        let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
        let error = parsed.as_ref().map(|value| &value["error"]);
        let text = |field: &str| error.and_then(|error| error[field].as_str()).map(str::to_owned);
        match (text("code"), text("message")) {
            (Some(code), Some(message)) => Self::Api { status, code, message },
            _ => Self::Api {
                status,
                code: format!("HTTP {status}"),
                message: String::from_utf8_lossy(body).trim().chars().take(200).collect(),
            },
        }
    }
}

pub type Result<T, E = CliError> = std::result::Result<T, E>;
