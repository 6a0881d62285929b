//! The HTTP client: the server's URL and the key on every request, refusals turned into
//! `CliError::Api`, TLS by rustls on ring with the Mozilla roots built in.

use std::{sync::Arc, time::Duration};

use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;
use url::Url;

use crate::{
    config::Login,
    error::{CliError, Result},
};

/// Longer than the server's SSE keep-alive (15 s): a stream silent for this long is dead.
const READ_TIMEOUT: Duration = Duration::from_secs(45);

pub struct Client {
    http: reqwest::Client,
    base: Url,
    key: String,
}

impl Client {
    pub fn new(login: &Login) -> Result<Self> {
        let base = parse_base(&login.url)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(READ_TIMEOUT)
            .user_agent(concat!("rdev/", env!("CARGO_PKG_VERSION")))
            // The key travels in a header of our own, which a redirect would carry to wherever
            // it points: follow none.
            .redirect(reqwest::redirect::Policy::none())
            .tls_backend_preconfigured(tls_config())
            .build()?;
        Ok(Self { http, base, key: login.api_key.clone() })
    }

    pub fn url(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        url.set_path(&format!("{}{path}", self.base.path().trim_end_matches('/')));
        url
    }

    /// The same URL with `ws`/`wss` for a WebSocket.
    pub fn ws_url(&self, path: &str) -> Url {
        let mut url = self.url(path);
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        let _ = url.set_scheme(scheme);
        url
    }

    /// The server's base URL, naming it in what rdev records about it.
    pub fn server(&self) -> &str {
        self.base.as_str()
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, self.url(path)).header("X-API-Key", &self.key)
    }

    /// Sends it; any answer but 2xx is the API's error.
    pub async fn send(&self, request: RequestBuilder) -> Result<Response> {
        let response = request.send().await?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap_or_default();
        Err(CliError::from_body(status, &body))
    }

    pub async fn get_json(&self, path: &str, query: &[(&str, String)]) -> Result<Value> {
        Ok(self.send(self.request(Method::GET, path).query(query)).await?.json().await?)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Value> {
        Ok(self.send(self.request(Method::POST, path).json(body)).await?.json().await?)
    }

    pub async fn delete(&self, path: &str) -> Result<()> {
        self.send(self.request(Method::DELETE, path)).await.map(drop)
    }
}

fn parse_base(url: &str) -> Result<Url> {
    let with_scheme = if url.contains("://") { url.to_owned() } else { format!("http://{url}") };
    let parsed =
        Url::parse(&with_scheme).map_err(|error| CliError::Usage(format!("bad server URL {url:?}: {error}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(CliError::Usage(format!("bad server URL {url:?}: only http and https")));
    }
    Ok(parsed)
}

/// rustls on ring with the Mozilla roots: no system CA bundle needed, no OpenSSL.
pub fn tls_config() -> rustls::ClientConfig {
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|_| unreachable!("ring supports rustls's default protocol versions"))
        .with_root_certificates(roots)
        .with_no_client_auth()
}
