//! A session is its key's alone, and so are the commands run in it: another key gets 404 for
//! them everywhere `/commands` reads (one, the list, output, events, cancel); `admin` sees all.

use serde_json::json;

use crate::{
    on_both_databases,
    support::{Db, TestApp},
};

on_both_databases!(a_session_s_commands_are_its_key_s_alone);

async fn a_session_s_commands_are_its_key_s_alone(db: Db) {
    let app = TestApp::on(db).await;
    let scopes = ["commands:execute", "commands:read"];
    let ((_, alice), (_, bob)) = (app.create_key(&scopes).await, app.create_key(&scopes).await);
    let created = app.post("/projects/hello/sessions", &alice, json!({"env": {"SECRET_TOKEN": "s3cret"}})).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let session = created.body["id"].as_str().unwrap();
    let ran = app.post(&format!("/sessions/{session}/shell"), &alice, json!({"command": "echo $SECRET_TOKEN"})).await;
    assert_eq!((ran.status, ran.body["stdout"].as_str()), (200, Some("s3cret\n")), "{}", ran.body);
    let id = ran.body["execution_id"].as_str().unwrap();
    // Bob's own command, outside any session, stays readable by everyone with commands:read.
    let public = app.post("/projects/hello/shell", &bob, json!({"command": "echo public"})).await;
    let public_id = public.body["execution_id"].as_str().unwrap();

    for path in [format!("/commands/{id}"), format!("/commands/{id}/output"), format!("/commands/{id}/events")] {
        let (status, text) = raw(&app, &path, &bob).await;
        assert_eq!(status, 404, "{path}: {text}");
        assert!(text.contains("NOT_FOUND") && !text.contains("s3cret"), "{path}: {text}");
    }
    let cancel = app.post(&format!("/commands/{id}/cancel"), &bob, json!({})).await;
    assert_eq!(cancel.status, 404, "{}", cancel.body);
    let listed = app.get("/commands?limit=100", &bob).await;
    let ids: Vec<&str> = listed.body["commands"].as_array().unwrap().iter().filter_map(|c| c["id"].as_str()).collect();
    assert!(!ids.contains(&id), "the list shows another key's session command: {ids:?}");
    assert!(ids.contains(&public_id), "the list hides commands outside sessions: {ids:?}");

    for key in [&alice, &app.admin_key] {
        assert_eq!(app.get(&format!("/commands/{id}"), key).await.status, 200);
        assert_eq!(raw(&app, &format!("/commands/{id}/output"), key).await, (200, "s3cret\n".to_owned()));
        let listed = app.get("/commands?limit=100", key).await;
        assert!(listed.body["commands"].as_array().unwrap().iter().any(|c| c["id"] == id));
    }
    assert_eq!(app.get(&format!("/commands/{public_id}"), &alice).await.status, 200);
}

/// Status and body text of a GET, whatever its content type.
async fn raw(app: &TestApp, path: &str, key: &str) -> (u16, String) {
    let reply = app.client.get(app.url(path)).header("X-API-Key", key).send().await.unwrap();
    (reply.status().as_u16(), reply.text().await.unwrap())
}
