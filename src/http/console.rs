//! `GET /console`: the web console, served from the binary itself. Its files are embedded at
//! build time (`include_bytes!`), so `cargo run --release` needs no Node.js and the page
//! fetches nothing from another origin. xterm.js is vendored under `console/vendor` from the
//! versions `console/package-lock.json` pins (`scripts/vendor-console --check` proves it).
//!
//! The page runs under a strict Content-Security-Policy: scripts from this origin only (no
//! inline script, no `eval`), connections to this origin only, no frames. xterm.js writes some
//! styles as `<style>` elements; those carry a nonce fresh for each page load, which `nonce.js`
//! stamps on them, so no `'unsafe-inline'` is needed for styles either.

use axum::{
    Router,
    extract::Path,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};
use base64::Engine as _;
use rand::RngExt;

const INDEX: &str = include_str!("console/index.html");
const NONCE_SLOT: &str = "{{STYLE_NONCE}}";

/// The embedded files: name, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("console.js", "text/javascript; charset=utf-8", include_bytes!("console/console.js")),
    ("console.css", "text/css; charset=utf-8", include_bytes!("console/console.css")),
    ("nonce.js", "text/javascript; charset=utf-8", include_bytes!("console/nonce.js")),
    ("ansi.js", "text/javascript; charset=utf-8", include_bytes!("console/ansi.js")),
    ("xterm.js", "text/javascript; charset=utf-8", include_bytes!("console/vendor/xterm.js")),
    ("xterm.css", "text/css; charset=utf-8", include_bytes!("console/vendor/xterm.css")),
    ("addon-fit.js", "text/javascript; charset=utf-8", include_bytes!("console/vendor/addon-fit.js")),
];

/// `/console` and `/console/assets/{name}`; `/` and `/console/` lead to the console, where a
/// person who typed the server's address is looking for it.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let to_console = || get(|| async { axum::response::Redirect::to("/console") });
    Router::new()
        .route("/console", get(page))
        .route("/console/assets/{name}", get(asset))
        .route("/", to_console())
        .route("/console/", to_console())
}

/// The policy of a page whose `<style>` elements carry `nonce`.
fn policy(nonce: &str) -> String {
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self' 'nonce-{nonce}'; connect-src 'self'; \
         img-src 'self' data:; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

/// Headers every console response carries.
fn hardened(mut response: Response, policy: &str) -> Response {
    let headers = response.headers_mut();
    if let Ok(policy) = HeaderValue::from_str(policy) {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn page() -> Response {
    let nonce = base64::engine::general_purpose::STANDARD.encode(rand::rng().random::<[u8; 16]>());
    let html = INDEX.replace(NONCE_SLOT, &nonce);
    let response = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
    hardened(response, &policy(&nonce))
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(asset, _, _)| *asset == name) {
        Some((_, content_type, bytes)) => {
            let response = ([(header::CONTENT_TYPE, *content_type)], *bytes).into_response();
            hardened(response, "default-src 'none'")
        }
        None => crate::http::error::ApiError::from(crate::domain::DomainError::not_found("console file", name))
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_the_page_names_is_embedded() {
        for name in INDEX.split("/console/assets/").skip(1).filter_map(|rest| rest.split('"').next()) {
            assert!(ASSETS.iter().any(|(asset, _, _)| *asset == name), "{name} is not embedded");
        }
        assert!(INDEX.contains(NONCE_SLOT));
    }
}
