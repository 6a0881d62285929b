//! Projects: list, get, and the 404 operators grep for.

mod common;

#[tokio::test]
async fn the_project_is_listed_and_read() {
    let Some(e2e) = common::target("projects::list_get") else { return };
    let (_, key) = e2e.create_key("projects", &["projects:read"]).await;
    let listed = e2e.get("/projects", &key).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let project = listed.body["projects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == e2e.project.as_str())
        .unwrap_or_else(|| panic!("project {} is not listed: {}", e2e.project, listed.text))
        .clone();
    assert!(matches!(project["status"].as_str(), Some("running" | "pending" | "stopped" | "unknown")), "{project}");
    assert!(matches!(project["executor"].as_str(), Some("local" | "kubernetes")), "{project}");

    let read = e2e.get(&format!("/projects/{}", e2e.project), &key).await;
    assert_eq!(read.status, 200, "{}", read.text);
    assert_eq!(read.body["id"], e2e.project.as_str());
    assert_eq!(read.body["executor"], project["executor"]);
}

#[tokio::test]
async fn an_unknown_project_is_404_project_not_found() {
    let Some(e2e) = common::target("projects::not_found") else { return };
    let (_, key) = e2e.create_key("projects-404", &["projects:read", "commands:execute"]).await;
    let missing = e2e.get(&format!("/projects/{}", common::marker()), &key).await;
    missing.assert_error(404, "NOT_FOUND");
    assert_eq!(missing.message(), "project not found");
    let shell =
        e2e.post(&format!("/projects/{}/shell", common::marker()), &key, serde_json::json!({"command": "true"})).await;
    shell.assert_error(404, "NOT_FOUND");
    assert_eq!(shell.message(), "project not found");
}
