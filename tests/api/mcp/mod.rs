//! `/mcp` driven by two independent MCP clients, the official Python SDK (`tests/mcp/client.py`)
//! and the MCP Inspector's CLI; across two replicas; and its refusals, each audited. The
//! clients are installed by `scripts/ensure-mcp-clients`.

mod clients;
mod refusals;

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::support::TestApp;

fn mcp_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp")
}

/// The virtualenv's Python, with the SDK in it.
fn python() -> PathBuf {
    let venv = std::env::var_os("RDEV_MCP_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(&std::env::var_os("HOME").expect("HOME")).join(".cache/rdev-api/mcp-venv"));
    let python = venv.join("bin/python");
    assert!(python.exists(), "{} is missing: run scripts/ensure-mcp-clients", python.display());
    python
}

pub fn url_of(app: &TestApp) -> String {
    format!("http://{}/mcp", app.addr)
}

/// One JSON-RPC message POSTed to `/mcp` as a client sends it; the status, headers and the
/// answer (the JSON body, or the last message of an event stream).
pub async fn rpc(
    url: &str,
    headers: &[(&str, &str)],
    method: &str,
    params: Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let mut request = crate::support::http_client()
        .post(url)
        .header("Accept", "application/json, text/event-stream")
        .header("Content-Type", "application/json")
        .json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("the request is sent");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    let answer = text
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .rfind(|message| message.get("id").is_some())
        .or_else(|| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null);
    (status, headers, answer)
}

/// The params of a `tools/call`.
pub fn call(name: &str, arguments: Value) -> Value {
    json!({"name": name, "arguments": arguments})
}
