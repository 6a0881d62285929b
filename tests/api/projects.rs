//! `GET /projects`, `GET /projects/{id}`, health and the OpenAPI document.

use crate::{
    on_both_databases,
    support::{Db, TestApp},
};

on_both_databases!(lists_folders_as_projects, health_ready_and_openapi_need_no_key);

async fn lists_folders_as_projects(db: Db) {
    let app = TestApp::on(db).await;
    std::fs::create_dir(app.projects_dir.join("zeta")).unwrap();
    std::fs::create_dir(app.projects_dir.join(".hidden")).unwrap();
    std::fs::write(app.projects_dir.join("a-file"), "not a project").unwrap();
    let reply = app.get("/projects", &app.admin_key).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let ids: Vec<_> = reply.body["projects"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["hello", "zeta"]);
    let hello = app.get("/projects/hello", &app.admin_key).await;
    assert_eq!(hello.body["status"], "running");
    assert_eq!(hello.body["executor"], "local");
    assert_eq!(hello.body["name"], "hello");
}

async fn health_ready_and_openapi_need_no_key(db: Db) {
    let app = TestApp::on(db).await;
    let health = app.send(app.client.get(app.url("/health"))).await;
    assert_eq!((health.status, health.body["status"].as_str()), (200, Some("ok")));
    let ready = app.send(app.client.get(app.url("/ready"))).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.body["checks"]["database"], "ok");
    let doc = app.send(app.client.get(app.url("/openapi.json"))).await;
    assert_eq!(doc.status, 200);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/projects",
        "/projects/{id}",
        "/projects/{id}/shell",
        "/api-keys",
        "/api-keys/{id}",
        "/audit",
        "/health",
        "/ready",
    ] {
        assert!(doc.body["paths"][path].is_object(), "{path} documented");
    }
    assert!(doc.body["components"]["securitySchemes"]["api_key"].is_object());
}
