//! Webhook signatures, checked by an independent implementation of Standard Webhooks (the
//! `standardwebhooks` crate, with its own HMAC and base64), not by the code that signs.

use rdev_api::domain::webhook::WebhookSecret;
use reqwest::header::HeaderMap;

#[test]
fn signatures_verify_with_an_independent_implementation() {
    let secret = WebhookSecret::generate();
    let body = br#"{"type":"command.succeeded","data":{"id":"1"}}"#;
    let timestamp = chrono::Utc::now().timestamp();
    let id = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W";
    let mut headers = HeaderMap::new();
    headers.insert("webhook-id", id.parse().unwrap());
    headers.insert("webhook-timestamp", timestamp.to_string().parse().unwrap());
    headers.insert("webhook-signature", secret.sign(id, timestamp, body).parse().unwrap());
    let verifier = standardwebhooks::Webhook::new(secret.expose()).unwrap();
    verifier.verify(body, &headers).expect("standardwebhooks accepts our signature");
    assert!(verifier.verify(br#"{"type":"command.failed"}"#, &headers).is_err(), "a changed body fails");
    let other = standardwebhooks::Webhook::new(WebhookSecret::generate().expose()).unwrap();
    assert!(other.verify(body, &headers).is_err(), "another secret fails");
}
