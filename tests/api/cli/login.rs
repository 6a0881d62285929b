//! `rdev login`/`logout`: the key checked, then stored readable by its owner only; the
//! environment over what is stored; completions.

use std::os::unix::fs::PermissionsExt;

use super::Rdev;
use crate::support::{Db, TestApp};

#[tokio::test]
async fn login_checks_the_key_stores_it_privately_and_logout_forgets_it() {
    let app = TestApp::on(Db::Sqlite).await;
    let rdev = Rdev::for_app(&app);
    let stored = rdev.home.path().join(".config/rdev/login.json");

    let bad = Rdev::at(&rdev.url, "rdev_0000000000000000000000000000000000000000000000000");
    let refused = bad.run(&["login", &rdev.url]).await;
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stderr.starts_with("rdev: UNAUTHORIZED: "), "{refused:?}");

    let ran = rdev.run(&["login", &rdev.url]).await;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let mode = std::fs::metadata(&stored).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let folder = std::fs::metadata(stored.parent().unwrap()).unwrap().permissions().mode() & 0o777;
    assert_eq!(folder, 0o700);

    // Without the environment, the stored login is used.
    let mut projects = rdev.command(&["projects"]);
    projects.env_remove("RDEV_URL").env_remove("RDEV_API_KEY");
    let output = projects.output().await.unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains("hello"), "{output:?}");
    // The environment wins over it.
    let mut elsewhere = rdev.command(&["projects"]);
    elsewhere.env_remove("RDEV_URL").env("RDEV_API_KEY", "rdev_wrong");
    assert_eq!(elsewhere.output().await.unwrap().status.code(), Some(1));

    assert_eq!(rdev.run(&["logout"]).await.code, Some(0));
    assert!(!stored.exists());
    let mut after = rdev.command(&["projects"]);
    after.env_remove("RDEV_URL").env_remove("RDEV_API_KEY");
    let output = after.output().await.unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("not logged in"), "{output:?}");

    let completions = rdev.run(&["completions", "bash"]).await;
    assert!(completions.stdout.contains("rdev") && completions.code == Some(0));
}
