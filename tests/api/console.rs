//! The web console: its headers here, and the whole of it in Debian's Chromium (driven by
//! `tests/console/console.mjs` with playwright-core, which scripts/test installs with the
//! browser when they are missing). Screenshots of each page land in the target folder.

use std::{path::Path, process::Stdio};

use crate::support::{Backend, Db, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_from_the_binary_under_a_strict_policy() {
    let app = TestApp::on(Backend::Local(Db::Sqlite)).await;
    let page = |n| {
        let client = app.client.clone();
        let url = app.url("/console");
        async move {
            let response = client.get(url).send().await.unwrap();
            assert_eq!(response.status(), 200, "page {n}");
            let policy = response.headers()["content-security-policy"].to_str().unwrap().to_owned();
            assert_eq!(response.headers()["x-frame-options"], "DENY");
            let html = response.text().await.unwrap();
            (policy, html)
        }
    };
    let (first, html) = page(1).await;
    let (second, _) = page(2).await;
    for directive in ["default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"] {
        assert!(first.contains(directive), "{first}");
    }
    assert!(!first.contains("unsafe"), "{first}");
    assert_ne!(first, second, "each page gets its own style nonce");
    let nonce = first.split("'nonce-").nth(1).and_then(|rest| rest.split('\'').next()).unwrap();
    assert!(html.contains(&format!("content=\"{nonce}\"")), "the page carries its nonce");
    assert!(!html.contains("http://") && !html.contains("https://"), "nothing from another origin");

    for (asset, kind) in [("xterm.js", "text/javascript"), ("xterm.css", "text/css"), ("console.js", "text/javascript")]
    {
        let response = app.client.get(app.url(&format!("/console/assets/{asset}"))).send().await.unwrap();
        assert_eq!(response.status(), 200, "{asset}");
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with(kind), "{asset}");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    }
    // What a browser downloads whole is gzipped when asked; the API's answers are not.
    let gzipped = |path: &str| {
        let request =
            app.client.get(app.url(path)).header("accept-encoding", "gzip").header("x-api-key", &app.admin_key);
        async move {
            request.send().await.unwrap().headers().get("content-encoding").map(|v| v.to_str().unwrap().to_owned())
        }
    };
    for path in ["/console", "/console/assets/xterm.js", "/openapi.json"] {
        assert_eq!(gzipped(path).await.as_deref(), Some("gzip"), "{path}");
    }
    assert_eq!(gzipped("/projects").await, None);
    // The server's address in a browser leads to the console.
    let staying = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for path in ["/", "/console/"] {
        let response = staying.get(app.url(path)).send().await.unwrap();
        assert_eq!(
            (response.status().as_u16(), response.headers().get("location").map(|v| v.to_str().unwrap())),
            (303, Some("/console")),
            "{path}"
        );
    }

    let missing = app.client.get(app.url("/console/assets/..%2Fmain.rs")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_chromium() {
    let app = TestApp::on(Backend::Local(Db::Sqlite)).await;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed in {}: run scripts/test, which installs it and Chromium",
        dir.display()
    );
    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let run = tokio::process::Command::new("node")
        .arg("console.mjs")
        .current_dir(&dir)
        .env("RDEV_URL", format!("http://{}", app.addr))
        .env("RDEV_KEY", &app.admin_key)
        .env("RDEV_PROJECTS_DIR", &app.projects_dir)
        .env("RDEV_SCREENSHOTS", &screenshots)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(120), run).await.unwrap().unwrap();
    assert!(
        output.status.success(),
        "the browser test failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    for page in ["login", "projects", "run", "terminal", "files", "queue", "audit"] {
        for name in [format!("{page}.png"), format!("{page}-400.png")] {
            let shot = screenshots.join(name);
            assert!(std::fs::metadata(&shot).is_ok_and(|m| m.len() > 1000), "no screenshot {}", shot.display());
        }
    }
}
