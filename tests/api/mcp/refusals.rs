//! What `/mcp` refuses, as the API would: no key (401 naming Bearer), a scope the key lacks (a
//! tool error, and the tool not listed), a revoked key, an `Origin` not allowed (403), the rate
//! limit (429); each in the audit.

use serde_json::{Value, json};

use super::{call, rpc, url_of};
use crate::support::{Db, TestApp};

const INITIALIZE: fn() -> Value =
    || json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}});

#[tokio::test]
async fn refusals_are_the_apis_and_each_is_audited() {
    let app = TestApp::on(Db::Sqlite)
        .configure(|config| config.server.mcp_allowed_origins = vec!["https://agents.example".into()])
        .await;
    let url = url_of(&app);
    let bearer = |key: &str| format!("Bearer {key}");

    // No key, or an unknown one: 401, naming the scheme.
    let (status, headers, answer) = rpc(&url, &[], "initialize", INITIALIZE()).await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"rdev-api\"");
    assert_eq!(answer["error"]["code"], "UNAUTHORIZED");
    let (status, ..) = rpc(&url, &[("Authorization", "Bearer rdev_nope")], "initialize", INITIALIZE()).await;
    assert_eq!(status, 401);

    // Either header works.
    let admin = bearer(&app.admin_key);
    let (status, _, answer) = rpc(&url, &[("Authorization", &admin)], "initialize", INITIALIZE()).await;
    assert_eq!((status, answer["result"]["serverInfo"]["name"].as_str()), (200, Some("rdev-api")), "{answer}");
    let (status, _, tools) = rpc(&url, &[("X-API-Key", &app.admin_key)], "tools/list", json!({})).await;
    assert_eq!(status, 200);
    // Every input schema stands alone: nothing refers to a document's components.
    assert!(!tools.to_string().contains("$ref"), "{tools}");

    // A page of another origin is refused; an allowed one is served.
    let (status, _, answer) =
        rpc(&url, &[("Authorization", &admin), ("Origin", "https://evil.example")], "tools/list", json!({})).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (403, Some("FORBIDDEN")), "{answer}");
    let (status, ..) =
        rpc(&url, &[("Authorization", &admin), ("Origin", "https://agents.example")], "tools/list", json!({})).await;
    assert_eq!(status, 200);

    // A scope the key lacks: the tool is not listed, and calling it is the API's refusal.
    let (_, reader) = app.create_key(&["projects:read"]).await;
    let (_, _, listed) = rpc(&url, &[("Authorization", &bearer(&reader))], "tools/list", json!({})).await;
    let names: Vec<&str> =
        listed["result"]["tools"].as_array().unwrap().iter().filter_map(|tool| tool["name"].as_str()).collect();
    assert_eq!(names, ["list_projects"], "{listed}");
    let (status, _, refused) = rpc(
        &url,
        &[("Authorization", &bearer(&reader))],
        "tools/call",
        call("run_command", json!({"project": "hello", "command": "true"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(refused["result"]["isError"], true, "{refused}");
    assert_eq!(refused["result"]["structuredContent"]["error"]["code"], "FORBIDDEN");

    // A revoked key is refused at once (on another replica, within CACHE_TTL, as on the API).
    let (id, doomed) = app.create_key(&["admin"]).await;
    let (status, ..) = rpc(&url, &[("Authorization", &bearer(&doomed))], "tools/list", json!({})).await;
    assert_eq!(status, 200);
    let revoked =
        app.send(app.client.delete(app.url(&format!("/api-keys/{id}"))).header("X-API-Key", &app.admin_key)).await;
    assert_eq!(revoked.status, 204);
    let (status, _, answer) = rpc(&url, &[("Authorization", &bearer(&doomed))], "tools/list", json!({})).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (401, Some("UNAUTHORIZED")), "{answer}");

    // The rate limit counts each /mcp request once, its tool calls included.
    let limited = app.insert_key(|key| key.rate_limit_per_minute = Some(2)).await;
    let limited = bearer(&limited);
    for _ in 0..2 {
        let (status, _, answer) = rpc(
            &url,
            &[("Authorization", &limited)],
            "tools/call",
            call("run_command", json!({"project": "hello", "command": "true"})),
        )
        .await;
        assert_eq!((status, answer["result"]["isError"].as_bool()), (200, Some(false)), "{answer}");
    }
    let (status, headers, answer) = rpc(&url, &[("Authorization", &limited)], "tools/list", json!({})).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (429, Some("RATE_LIMITED")), "{answer}");
    assert!(headers.contains_key("retry-after"));

    // Each refusal is in the audit with its reason.
    let audit = app.get("/audit?outcome=rejected&limit=100", &app.admin_key).await;
    let reasons: Vec<String> = audit.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            format!("{} | {}", entry["command"].as_str().unwrap_or("-"), entry["reason"].as_str().unwrap_or("-"))
        })
        .collect();
    let has =
        |command: &str, reason: &str| reasons.iter().any(|line| line.starts_with(command) && line.contains(reason));
    assert!(has("MCP request", "UNAUTHORIZED: missing API key") || has("MCP request", "UNAUTHORIZED"), "{reasons:#?}");
    assert!(has("MCP request", "FORBIDDEN: Origin https://evil.example"), "{reasons:#?}");
    assert!(has("MCP request", "RATE_LIMITED"), "{reasons:#?}");
    assert!(has("true", "FORBIDDEN"), "the refused run_command, as its API twin: {reasons:#?}");
    let unauthorized =
        reasons.iter().filter(|line| line.starts_with("MCP request") && line.contains("UNAUTHORIZED")).count();
    assert!(unauthorized >= 3, "no key, an unknown key, the revoked key: {reasons:#?}");
}
