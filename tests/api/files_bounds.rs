//! The file API against a hostile project: FIFOs, sockets, sparse giants, trees deeper than any
//! stack and folders too big for one answer. Each is refused or bounded, and while the attack
//! runs the rest of the server keeps answering.

use std::{
    os::unix::fs::{FileTypeExt as _, symlink},
    time::Instant,
};

use futures_util::future::join_all;
use serde_json::Value;

use crate::{
    on_every_backend,
    support::{Backend, Db, TestApp},
};

on_every_backend!(
    a_fifo_or_a_socket_is_refused_at_once,
    if_match_star_means_any_existing_file,
    a_big_folder_is_listed_in_pages,
    a_tree_deeper_than_any_stack_is_deleted,
);

fn content_url(app: &TestApp, path: &str) -> String {
    app.url(&format!("/projects/hello/files/content?path={path}"))
}

fn mkfifo(path: &std::path::Path) {
    let status = std::process::Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success());
}

async fn a_fifo_or_a_socket_is_refused_at_once(backend: Backend) {
    let app = TestApp::on(backend).await;
    let root = app.project_path("hello");
    mkfifo(&root.join("pipe"));
    let _socket = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
    for path in ["pipe", "sock"] {
        let read = app.send(app.client.get(content_url(&app, path)).header("X-API-Key", &app.admin_key)).await;
        assert_eq!((read.status, read.field_error("path").is_some()), (400, true), "GET {path}: {}", read.body);
        let head = app.client.head(content_url(&app, path)).header("X-API-Key", &app.admin_key).send().await.unwrap();
        assert_eq!(head.status(), 400, "HEAD {path}");
        let guarded = app
            .send(
                app.client
                    .put(content_url(&app, path))
                    .header("X-API-Key", &app.admin_key)
                    .header("If-Match", "\"0000\"")
                    .body("x"),
            )
            .await;
        assert_eq!(guarded.status, 400, "If-Match PUT onto {path}: {}", guarded.body);
    }
    assert!(std::fs::metadata(root.join("pipe")).unwrap().file_type().is_fifo(), "left as it was");
}

/// Six hundred readers of a FIFO at once (more than tokio's blocking pool holds) while another
/// key lists projects and writes a file: nobody waits on the pipe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_hundred_fifo_readers_leave_the_server_free() {
    let app = TestApp::on(Db::Sqlite).await;
    mkfifo(&app.project_path("hello").join("pipe"));
    let (_, reader) = app.create_key(&["files:read"]).await;
    let (_, other) = app.create_key(&["projects:read", "files:write", "files:read"]).await;
    let started = Instant::now();
    let attacks = join_all((0..600).map(|_| {
        let request = app.client.get(content_url(&app, "pipe")).header("X-API-Key", &reader).send();
        async move { request.await.map(|r| r.status().as_u16()).unwrap_or(0) }
    }));
    let bystander = async {
        let listed = app.get("/projects", &other).await;
        let wrote = app
            .send(app.client.put(content_url(&app, "after.txt")).header("X-API-Key", &other).body("still here"))
            .await;
        (listed.status, wrote.status)
    };
    let (statuses, bystander) = tokio::join!(attacks, bystander);
    assert_eq!(bystander, (200, 201));
    assert!(statuses.iter().all(|s| *s == 400 || *s == 429), "{:?}", &statuses[..10]);
    assert!(started.elapsed().as_secs() < 60, "the pipe never held a request");
}

async fn if_match_star_means_any_existing_file(backend: Backend) {
    let app = TestApp::on(backend).await;
    let put = |path: &str, tag: &str, body: &'static str| {
        app.client.put(content_url(&app, path)).header("X-API-Key", &app.admin_key).header("If-Match", tag).body(body)
    };
    std::fs::write(app.project_path("hello").join("there.txt"), "old").unwrap();
    assert_eq!(app.send(put("there.txt", "*", "new")).await.status, 200);
    assert_eq!(std::fs::read(app.project_path("hello").join("there.txt")).unwrap(), b"new");
    let missing = app.send(put("missing.txt", "*", "new")).await;
    assert_eq!((missing.status, missing.error_code()), (412, "PRECONDITION_FAILED"));
    assert!(!app.project_path("hello").join("missing.txt").exists());
}

async fn a_big_folder_is_listed_in_pages(backend: Backend) {
    let app = TestApp::on(backend).await;
    let folder = app.project_path("hello").join("many");
    std::fs::create_dir_all(&folder).unwrap();
    for i in 0..1001 {
        std::fs::write(folder.join(format!("f{i:04}")), "").unwrap();
    }
    let first = app.get("/projects/hello/files?path=many", &app.admin_key).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let names = |page: &Value| -> Vec<String> {
        page["entries"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_owned()).collect()
    };
    let first_names = names(&first.body);
    assert_eq!((first_names.len(), first_names[0].as_str()), (1000, "f0000"), "1000 per page, by name");
    let cursor = first.body["next_cursor"].as_str().expect("a cursor for the rest").to_owned();
    let rest = app.get(&format!("/projects/hello/files?path=many&cursor={cursor}"), &app.admin_key).await;
    assert_eq!((names(&rest.body), rest.body["next_cursor"].clone()), (vec!["f1000".to_owned()], Value::Null));

    let small = app.get("/projects/hello/files?path=many&limit=2", &app.admin_key).await;
    assert_eq!(names(&small.body), ["f0000", "f0001"]);
    let next = small.body["next_cursor"].as_str().unwrap();
    let second = app.get(&format!("/projects/hello/files?path=many&limit=2&cursor={next}"), &app.admin_key).await;
    assert_eq!(names(&second.body), ["f0002", "f0003"]);

    for bad in ["limit=0", "limit=1001", "cursor=!!", "limit=ten"] {
        let refused = app.get(&format!("/projects/hello/files?path=many&{bad}"), &app.admin_key).await;
        assert_eq!((refused.status, refused.error_code()), (400, "VALIDATION_FAILED"), "{bad}: {}", refused.body);
    }
}

async fn a_tree_deeper_than_any_stack_is_deleted(backend: Backend) {
    let app = TestApp::on(backend).await;
    let top = app.project_path("hello").join("deep");
    std::fs::create_dir(&top).unwrap();
    // Built a step at a time beneath an open folder: the whole path is far past PATH_MAX.
    let mut folder = cap_std::fs::Dir::open_ambient_dir(&top, cap_std::ambient_authority()).unwrap();
    for _ in 0..10_000 {
        folder.create_dir("d").unwrap();
        folder.write("f", "f").unwrap();
        folder = folder.open_dir("d").unwrap();
    }
    drop(folder);
    symlink("/etc", top.join("etc")).unwrap();
    let deleted = app
        .send(
            app.client
                .delete(app.url("/projects/hello/files?path=deep&recursive=true"))
                .header("X-API-Key", &app.admin_key),
        )
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    assert!(!top.exists());
    assert!(std::path::Path::new("/etc/passwd").exists(), "a link inside is removed, not followed");
    let listed = app.get("/projects/hello/files", &app.admin_key).await;
    assert!(!listed.body["entries"].as_array().unwrap().iter().any(|e| e["name"] == "deep"));
}

/// A 1 TiB sparse file: its HEAD answers at once with an identity ETag (never hashing a
/// terabyte), the tag is stable while the file is, and changes when it is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sparse_terabyte_is_tagged_without_being_read() {
    let app = TestApp::on(Db::Sqlite).await;
    let path = app.project_path("hello").join("sparse");
    std::fs::File::create(&path).unwrap().set_len(1 << 40).unwrap();
    let head = || app.client.head(content_url(&app, "sparse")).header("X-API-Key", &app.admin_key).send();
    let first = head().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["content-length"], (1u64 << 40).to_string().as_str());
    let tag = first.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(head().await.unwrap().headers()["etag"].to_str().unwrap(), tag, "stable");
    let guarded = app
        .send(
            app.client
                .put(content_url(&app, "sparse"))
                .header("X-API-Key", &app.admin_key)
                .header("If-Match", &tag)
                .body("small"),
        )
        .await;
    assert_eq!(guarded.status, 200, "its tag guards a write: {}", guarded.body);
    let small = head().await.unwrap();
    assert_ne!(small.headers()["etag"].to_str().unwrap(), tag);
}

/// What a server that died mid-write left in its scratch folder is taken over by the next one
/// to start; the scratch folder of a server still running is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_servers_scratch_is_taken_at_start_and_a_live_ones_kept() {
    let app = TestApp::on(Db::Sqlite).await;
    let scratch = app.project_path("hello").parent().unwrap().join(".rdev-scratch");
    let live: Vec<_> = std::fs::read_dir(&scratch).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(live.len(), 1, "one folder per server: {live:?}");
    let dead = scratch.join(".rdev-server-dead");
    std::fs::create_dir_all(dead.join("half-deleted/tree")).unwrap();
    std::fs::write(dead.join(".rdev-upload-partial"), "partial").unwrap();
    let _next = app.replica(|_| {}).await;
    assert!(!dead.exists(), "the dead server's folder is taken at start");
    assert!(live[0].exists(), "the live server's folder is kept");
    assert_eq!(
        app.send(app.client.put(content_url(&app, "a.txt")).header("X-API-Key", &app.admin_key).body("a")).await.status,
        201,
        "and the first server still writes through it"
    );
}
