//! The file API on every backend: binary round trips, folders made on the way, listing, the
//! errors of each operation, `If-Match`, delete, scopes and audit rows; and escapes refused.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{
    on_every_backend,
    support::{Backend, Reply, TestApp},
};

on_every_backend!(
    every_byte_value_round_trips_and_folders_are_made,
    listing_and_the_errors_of_each_operation,
    if_match_protects_a_file_from_a_lost_update,
    delete_files_and_folders,
    scopes_and_audit_rows,
    escapes_are_refused,
);

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

async fn put(app: &TestApp, path: &str, body: Vec<u8>, if_match: Option<&str>) -> Reply {
    let mut request = app
        .client
        .put(app.url(&format!("/projects/hello/files/content?path={}", urlencode(path))))
        .header("X-API-Key", &app.admin_key)
        .body(body);
    if let Some(tag) = if_match {
        request = request.header("If-Match", tag);
    }
    app.send(request).await
}

async fn get_raw(app: &TestApp, path: &str, key: &str) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let response = app
        .client
        .get(app.url(&format!("/projects/hello/files/content?path={}", urlencode(path))))
        .header("X-API-Key", key)
        .send()
        .await
        .unwrap();
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    (status, headers, response.bytes().await.unwrap().to_vec())
}

async fn delete(app: &TestApp, query: &str) -> Reply {
    app.send(app.client.delete(app.url(&format!("/projects/hello/files?{query}"))).header("X-API-Key", &app.admin_key))
        .await
}

fn urlencode(path: &str) -> String {
    path.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"/._-".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn every_byte_value_round_trips_and_folders_are_made(backend: Backend) {
    let app = TestApp::on(backend).await;
    let bytes: Vec<u8> = (0..=255).cycle().take(256 * 3).collect();
    let created = put(&app, "deep/er/all bytes.bin", bytes.clone(), None).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(
        created.body,
        json!({"path": "deep/er/all bytes.bin", "size": 768, "sha256": hex(&bytes), "etag": hex(&bytes)})
    );
    let (status, headers, read) = get_raw(&app, "deep/er/all bytes.bin", &app.admin_key).await;
    assert_eq!((status, hex(&read)), (200, hex(&bytes)));
    assert_eq!(headers["etag"].to_str().unwrap(), format!("\"{}\"", hex(&bytes)));
    assert_eq!(headers["content-length"], "768");
    assert_eq!(headers["content-type"], "application/octet-stream");
    let replaced = put(&app, "deep/er/all bytes.bin", b"short".to_vec(), None).await;
    assert_eq!((replaced.status, replaced.body["size"].as_u64()), (200, Some(5)));
    assert_eq!(std::fs::read(app.project_path("hello").join("deep/er/all bytes.bin")).unwrap(), b"short");
    let empty = put(&app, "empty", vec![], None).await;
    assert_eq!((empty.status, empty.body["size"].as_u64()), (201, Some(0)));
}

async fn listing_and_the_errors_of_each_operation(backend: Backend) {
    let app = TestApp::on(backend).await;
    let root = app.project_path("hello");
    std::fs::create_dir_all(root.join("dir/inner")).unwrap();
    std::fs::write(root.join("dir/b.txt"), "bb").unwrap();
    std::fs::write(root.join("dir/.hidden"), "h").unwrap();
    std::os::unix::fs::symlink("b.txt", root.join("dir/link")).unwrap();
    let listed = app.get("/projects/hello/files?path=dir", &app.admin_key).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let entries = listed.body["entries"].as_array().unwrap();
    let summary: Vec<(&str, &str)> =
        entries.iter().map(|e| (e["name"].as_str().unwrap(), e["type"].as_str().unwrap())).collect();
    assert_eq!(summary, [(".hidden", "file"), ("b.txt", "file"), ("inner", "dir"), ("link", "symlink")]);
    let b = &entries[1];
    assert_eq!((b["size"].as_u64(), b["mode"].as_str().map(str::len)), (Some(2), Some(3)));
    assert!(b["modified_at"].is_string());
    let top = app.get("/projects/hello/files", &app.admin_key).await;
    assert_eq!(top.body["path"], ".");
    assert!(top.body["entries"].as_array().unwrap().iter().any(|e| e["name"] == "dir"));

    let missing = get_raw(&app, "nope.txt", &app.admin_key).await;
    assert_eq!(missing.0, 404);
    let missing: Value = serde_json::from_slice(&missing.2).unwrap();
    assert_eq!(
        (missing["error"]["code"].as_str(), missing["error"]["message"].as_str()),
        (Some("NOT_FOUND"), Some("file not found"))
    );
    assert_eq!(app.get("/projects/hello/files?path=nope", &app.admin_key).await.status, 404);
    assert_eq!(get_raw(&app, "nope/deeper/file", &app.admin_key).await.0, 404, "in a missing folder");
    assert_eq!(app.get("/projects/hello/files?path=nope/deeper", &app.admin_key).await.status, 404);
    let folder = get_raw(&app, "dir", &app.admin_key).await;
    assert_eq!(folder.0, 400, "a folder as content");
    let file_as_folder = app.get("/projects/hello/files?path=dir/b.txt", &app.admin_key).await;
    assert_eq!((file_as_folder.status, file_as_folder.field_error("path").is_some()), (400, true));
    let over_folder = put(&app, "dir/inner", b"x".to_vec(), None).await;
    assert_eq!((over_folder.status, over_folder.field_error("path").is_some()), (400, true));
    assert_eq!(app.get("/projects/nope/files", &app.admin_key).await.message(), "project not found");
}

async fn if_match_protects_a_file_from_a_lost_update(backend: Backend) {
    let app = TestApp::on(backend).await;
    let first = put(&app, "conf.txt", b"one".to_vec(), None).await;
    let etag = format!("\"{}\"", first.body["sha256"].as_str().unwrap());
    let stale = "\"0000000000000000000000000000000000000000000000000000000000000000\"";
    let refused = put(&app, "conf.txt", b"two".to_vec(), Some(stale)).await;
    assert_eq!((refused.status, refused.error_code()), (412, "PRECONDITION_FAILED"));
    assert_eq!(std::fs::read(app.project_path("hello").join("conf.txt")).unwrap(), b"one", "unchanged");
    let ok = put(&app, "conf.txt", b"two".to_vec(), Some(&etag)).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(put(&app, "conf.txt", b"three".to_vec(), Some(&etag)).await.status, 412, "the old tag no longer fits");
    assert_eq!(put(&app, "new.txt", b"x".to_vec(), Some("*")).await.status, 412, "* needs a file");
    let now = put(&app, "conf.txt", b"two".to_vec(), Some("*")).await;
    assert_eq!(now.status, 200, "* takes any file");
    assert_eq!(put(&app, "conf.txt", b"x".to_vec(), Some("garbage")).await.status, 400);
    // A delete with If-Match takes only the version it names.
    let delete_if = |tag: String| {
        let request = app.client.delete(app.url("/projects/hello/files?path=conf.txt"));
        app.send(request.header("X-API-Key", &app.admin_key).header("If-Match", tag))
    };
    let stale_delete = delete_if(etag.clone()).await;
    assert_eq!((stale_delete.status, stale_delete.error_code()), (412, "PRECONDITION_FAILED"));
    assert_eq!(std::fs::read(app.project_path("hello").join("conf.txt")).unwrap(), b"two", "kept");
    let current = format!("\"{}\"", now.body["sha256"].as_str().unwrap());
    assert_eq!(delete_if(current.clone()).await.status, 204);
    assert!(!app.project_path("hello").join("conf.txt").exists());
    assert_eq!(delete_if(current).await.status, 412, "nothing to match");
    let leftovers: Vec<_> = std::fs::read_dir(app.project_path("hello"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(".rdev-upload"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

async fn delete_files_and_folders(backend: Backend) {
    let app = TestApp::on(backend).await;
    let root = app.project_path("hello");
    std::fs::create_dir_all(root.join("tree/a/b")).unwrap();
    std::fs::write(root.join("tree/a/b/f"), "f").unwrap();
    std::fs::write(root.join("single"), "s").unwrap();
    assert_eq!(delete(&app, "path=single").await.status, 204);
    assert!(!root.join("single").exists());
    assert_eq!(delete(&app, "path=single").await.status, 404);
    let not_recursive = delete(&app, "path=tree").await;
    assert_eq!((not_recursive.status, not_recursive.field_error("path").is_some()), (400, true));
    assert!(root.join("tree/a/b/f").exists());
    assert_eq!(delete(&app, "path=tree&recursive=true").await.status, 204);
    assert!(!root.join("tree").exists());
    assert_eq!(delete(&app, "path=.&recursive=true").await.status, 400, "never the project itself");
    assert!(root.exists());
}

async fn scopes_and_audit_rows(backend: Backend) {
    let app = TestApp::on(backend).await;
    let (reader_id, reader) = app.create_key(&["files:read"]).await;
    let (_, executor) = app.create_key(&["commands:execute", "projects:read"]).await;
    assert_eq!(put(&app, "a.txt", b"a".to_vec(), None).await.status, 201);
    assert_eq!(get_raw(&app, "a.txt", &reader).await.0, 200);
    assert_eq!(get_raw(&app, "a.txt", &executor).await.0, 403);
    let write = app
        .send(
            app.client.put(app.url("/projects/hello/files/content?path=b.txt")).header("X-API-Key", &reader).body("b"),
        )
        .await;
    assert_eq!((write.status, write.error_code()), (403, "FORBIDDEN"));
    assert_eq!(delete(&app, "path=a.txt").await.status, 204);
    let audit = app.get("/audit?project_id=hello", &app.admin_key).await;
    let commands: Vec<&str> =
        audit.body["entries"].as_array().unwrap().iter().filter_map(|e| e["command"].as_str()).collect();
    assert!(commands.iter().any(|c| c.starts_with("PUT file a.txt (1 bytes, sha256 ")), "{commands:?}");
    assert!(commands.contains(&"DELETE file a.txt"), "{commands:?}");
    let _ = reader_id;
}

async fn escapes_are_refused(backend: Backend) {
    let app = TestApp::on(backend).await;
    let root = app.project_path("hello");
    // A sibling project: the folder next to this project's (another pod's, on the fake cluster).
    let sibling = root.parent().unwrap().join("other-project");
    std::fs::create_dir_all(&sibling).unwrap();
    std::fs::write(sibling.join("secret"), "secret").unwrap();
    std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
    std::os::unix::fs::symlink(&sibling, root.join("sibling")).unwrap();
    for path in ["../x", "/etc/passwd", "etc/passwd", "etc", "sibling/secret", "sibling/new", "a/../../x"] {
        let read = get_raw(&app, path, &app.admin_key).await;
        assert_eq!(read.0, 400, "reading {path}: {}", String::from_utf8_lossy(&read.2));
        let write = put(&app, path, b"pwned".to_vec(), None).await;
        assert_eq!((write.status, write.field_error("path").is_some()), (400, true), "writing {path}: {}", write.body);
    }
    assert_eq!(app.get("/projects/hello/files?path=etc", &app.admin_key).await.status, 400);
    assert_eq!(app.get("/projects/hello/files?path=sibling", &app.admin_key).await.status, 400);
    assert_eq!(std::fs::read_to_string(sibling.join("secret")).unwrap(), "secret");
    assert!(!sibling.join("new").exists());
    assert_eq!(delete(&app, "path=sibling/secret").await.status, 400);
    // Deleting the link removes the link, not what it points to.
    assert_eq!(delete(&app, "path=sibling").await.status, 204);
    assert!(sibling.join("secret").exists());
}

/// A folder swapped for a symlink to outside, over and over, while requests read and write
/// through it: the kernel resolves each open beneath the project, so nothing outside is touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_swapped_for_a_symlink_never_leads_outside() {
    let app = TestApp::on(Backend::Local(crate::support::Db::Sqlite)).await;
    let root = app.project_path("hello");
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("x"), "OUTSIDE").unwrap();
    std::fs::create_dir(root.join("swap")).unwrap();
    std::fs::write(root.join("swap/x"), "inside").unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (root, target, stop) = (root.clone(), outside.path().to_owned(), stop.clone());
        std::thread::spawn(move || {
            let mut swaps = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = std::fs::rename(root.join("swap"), root.join("swap.real"));
                let _ = std::os::unix::fs::symlink(&target, root.join("swap"));
                let _ = std::fs::remove_file(root.join("swap"));
                let _ = std::fs::rename(root.join("swap.real"), root.join("swap"));
                swaps += 1;
            }
            swaps
        })
    };
    let (mut reads, mut writes) = (0, 0);
    for i in 0..150 {
        let (status, _, body) = get_raw(&app, "swap/x", &app.admin_key).await;
        assert_ne!(body, b"OUTSIDE", "read through the link");
        reads += usize::from(status == 200);
        let written = put(&app, "swap/x", format!("write {i}").into_bytes(), None).await;
        writes += usize::from(written.status < 300);
        assert!(written.status < 300 || written.status == 400 || written.status == 404, "{}", written.body);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    let outside_files: Vec<_> = std::fs::read_dir(outside.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(outside_files, ["x"], "nothing was created outside");
    assert_eq!(std::fs::read_to_string(outside.path().join("x")).unwrap(), "OUTSIDE");
    assert!(swaps > 100 && reads + writes > 0, "swaps {swaps}, reads {reads}, writes {writes}");
    eprintln!("swaps {swaps}, successful reads {reads} and writes {writes} of 150 each");
}

/// Writers of one path at once: the file ends as one writer's whole content, never a mix; a
/// reader meanwhile sees whole versions only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_leave_one_whole_content() {
    let app = TestApp::on(Backend::Local(crate::support::Db::Sqlite)).await;
    let content = |i: u8| vec![b'a' + i; 512 * 1024];
    assert_eq!(put(&app, "contended", content(0), None).await.status, 201);
    let writers = (1..=6u8).map(|i| {
        let app = &app;
        async move { put(app, "contended", content(i), None).await.status }
    });
    let reader = async {
        for _ in 0..10 {
            let (_, _, body) = get_raw(&app, "contended", &app.admin_key).await;
            assert!(body.len() == 512 * 1024 && body.iter().all(|&b| b == body[0]), "a mixed read");
        }
    };
    let (statuses, ()) = tokio::join!(futures_util::future::join_all(writers), reader);
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    let stored = std::fs::read(app.project_path("hello").join("contended")).unwrap();
    assert!(stored.len() == 512 * 1024 && stored.iter().all(|&b| b == stored[0]) && stored[0] != b'a');
}

/// The server's peak RSS (VmHWM) while a 100 MiB file goes up and comes back down, against its
/// RSS before: the bodies stream, so it grows by far less than the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_mib_up_and_down_keep_the_servers_memory_flat() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("projects/hello")).unwrap();
    let admin = rdev_api::domain::ApiKeySecret::generate().expose().to_owned();
    let server =
        crate::support::process::ServerProcess::start(dir.path(), &[("RDEV_BOOTSTRAP_API_KEY", admin.as_str())]).await;
    let status_kib = |field: &str| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with(field)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let source = dir.path().join("source.bin");
    {
        use std::io::Write;
        let mut file = std::io::BufWriter::new(std::fs::File::create(&source).unwrap());
        let block: Vec<u8> = (0..1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
        for _ in 0..100 {
            file.write_all(&block).unwrap();
        }
    }
    // Warm up the paths once with a small file, then measure.
    let curl = |args: &[&str]| {
        let output = std::process::Command::new("curl")
            .args(["-sS", "-f", "-H", &format!("X-API-Key: {admin}")])
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        output.stdout
    };
    let url = server.url("/projects/hello/files/content?path=big.bin");
    let small = dir.path().join("small");
    std::fs::write(&small, "warm").unwrap();
    curl(&["-T", small.to_str().unwrap(), &url]);
    curl(&["-o", "/dev/null", &url]);
    let before = status_kib("VmRSS:");
    curl(&["-T", source.to_str().unwrap(), &url]);
    let back = dir.path().join("back.bin");
    curl(&["-o", back.to_str().unwrap(), &url]);
    let peak = status_kib("VmHWM:");
    let growth_mib = peak.saturating_sub(before) as f64 / 1024.0;
    eprintln!("RSS before {before} KiB, peak {peak} KiB: growth {growth_mib:.1} MiB for a 100 MiB upload and download");
    assert!(growth_mib < 32.0, "grew {growth_mib:.1} MiB");
    assert_eq!(std::fs::metadata(&back).unwrap().len(), 100 * 1024 * 1024);
    assert_eq!(
        Sha256::digest(std::fs::read(&back).unwrap()),
        Sha256::digest(std::fs::read(&source).unwrap()),
        "the same bytes came back"
    );
}
