//! `WebhookSender` over reqwest (rustls, ring): one POST per attempt, no redirects, a timeout for
//! the whole exchange, and the first bytes of the answer kept.
//!
//! TLS is rustls on ring with the Mozilla root certificates built in (webpki-roots).
//!
//! Unless private addresses are allowed (`RDEV_WEBHOOK_ALLOW_PRIVATE`), the resolver drops every
//! non-public address a name resolves to, and the connection goes only to what remains. Checking
//! the addresses that are then connected to (not a separate lookup beforehand) leaves no window
//! for a name to change between check and use.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use async_trait::async_trait;
use reqwest::{
    dns::{Addrs, Name, Resolve, Resolving},
    header::{HeaderMap, HeaderName, HeaderValue},
};

use crate::{
    domain::address::is_public,
    ports::{WebhookRequest, WebhookResponse, WebhookSender},
    telemetry::propagation::current_traceparent,
};

/// The first bytes of a receiver's answer kept with an attempt.
const RESPONSE_BODY_BYTES: usize = 1024;

pub struct HttpWebhookSender {
    client: reqwest::Client,
    allow_private: bool,
}

impl HttpWebhookSender {
    pub fn new(timeout: Duration, allow_private: bool) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("rdev-api/", env!("CARGO_PKG_VERSION"), " (webhooks)"))
            .tls_backend_preconfigured(tls_config());
        if !allow_private {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        Ok(Self { client: builder.build()?, allow_private })
    }

    /// A literal address in the URL never reaches the resolver, so it is checked here.
    fn refuse_literal(&self, url: &reqwest::Url) -> Option<String> {
        if self.allow_private {
            return None;
        }
        let ip = match url.host()? {
            url::Host::Ipv4(ip) => ip.into(),
            url::Host::Ipv6(ip) => ip.into(),
            url::Host::Domain(_) => return None,
        };
        (!is_public(ip)).then(|| format!("refused: {ip} is not a public address (RDEV_WEBHOOK_ALLOW_PRIVATE is off)"))
    }
}

/// rustls on ring with the Mozilla roots built in: the runtime image needs no CA bundle, and a
/// missing one cannot stop the server from starting.
fn tls_config() -> rustls::ClientConfig {
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|_| unreachable!("ring supports rustls's default protocol versions"))
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// Resolves with the system resolver and keeps only public addresses.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = all.iter().copied().filter(|addr| is_public(addr.ip())).collect();
            if public.is_empty() {
                let seen: Vec<String> = all.iter().map(|addr| addr.ip().to_string()).collect();
                return Err(format!(
                    "refused: {host} resolves only to non-public addresses ({}) and RDEV_WEBHOOK_ALLOW_PRIVATE is off",
                    seen.join(", ")
                )
                .into());
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// The error and its causes in one line: reqwest's own message alone ("error sending request")
/// does not say what went wrong.
fn describe(error: &reqwest::Error) -> String {
    let mut message = if error.is_timeout() { "timed out".to_owned() } else { error.to_string() };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

fn headers(request: &WebhookRequest) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let traceparent = current_traceparent();
    let pairs = request.headers.iter().map(|(name, value)| (*name, value.as_str()));
    for (name, value) in pairs.chain(traceparent.as_deref().map(|t| ("traceparent", t))) {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    headers
}

#[async_trait]
impl WebhookSender for HttpWebhookSender {
    async fn send(&self, request: &WebhookRequest) -> WebhookResponse {
        let failed = |error: String| WebhookResponse { status_code: None, error: Some(error), body: None };
        let url = match reqwest::Url::parse(&request.url) {
            Ok(url) => url,
            Err(error) => return failed(format!("invalid URL: {error}")),
        };
        if let Some(refusal) = self.refuse_literal(&url) {
            return failed(refusal);
        }
        let sent = self.client.post(url).headers(headers(request)).body(request.body.clone()).send().await;
        let mut response = match sent {
            Ok(response) => response,
            Err(error) => return failed(describe(&error)),
        };
        let status_code = response.status().as_u16();
        let mut body = Vec::new();
        let mut error = None;
        while body.len() < RESPONSE_BODY_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => {
                    error = Some(format!("reading the response: {}", describe(&e)));
                    break;
                }
            }
        }
        body.truncate(RESPONSE_BODY_BYTES);
        let body = (!body.is_empty()).then(|| String::from_utf8_lossy(&body).into_owned());
        WebhookResponse { status_code: Some(status_code), error, body }
    }
}
