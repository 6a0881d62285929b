//! What must hold when things go wrong: every process started is audited whatever ends it, a
//! database outage is answered fast (and loses no audit row), and no client can hold the
//! server's connections.

mod audited;
mod connections;
mod outage;

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::TestApp;

/// The lines a project's `runs` file holds: each command of these tests appends one when it
/// starts, so this counts processes started.
pub fn runs(app: &TestApp, project: &str, file: &str) -> usize {
    std::fs::read_to_string(app.project_path(project).join(file)).map_or(0, |text| text.lines().count())
}

/// Audit entries of executions in `project` (refusals left out), every page.
pub async fn executions_audited(app: &TestApp, project: &str) -> Vec<Value> {
    let mut entries = Vec::new();
    let mut cursor = String::new();
    loop {
        let reply = app.get(&format!("/audit?project_id={project}&limit=500&cursor={cursor}"), &app.admin_key).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let page = reply.body["entries"].as_array().unwrap();
        entries.extend(page.iter().filter(|e| e["outcome"] != "rejected").cloned());
        match reply.body["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => return entries,
        }
    }
}

/// Polls `check` every 20 ms until it holds (at most `within`); how long that took.
pub async fn eventually(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
