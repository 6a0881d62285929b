//! `rdev cp`: a 100 MiB file and a folder tree both ways, equal to the byte; the progress bar on
//! a terminal and none in a pipe; a changed file not clobbered; the client small throughout.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
};

use sha2::{Digest, Sha256};

use super::{Rdev, rdev_binary, shell::Tmux};
use crate::support::{Db, TestApp};

/// The client's peak resident memory must stay under this, whatever it copies.
const MAX_RSS_KIB: i64 = 32 * 1024;

fn sha256_of(path: &Path) -> String {
    use std::io::Read;
    let mut hasher = Sha256::new();
    let mut file = std::fs::File::open(path).unwrap();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    hasher.finalize().iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Every file under `root`, by relative path, with its sha256.
fn tree_digest(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut files = BTreeMap::new();
    let mut folders = vec![root.to_owned()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else {
                files.insert(path.strip_prefix(root).unwrap().to_owned(), sha256_of(&path));
            }
        }
    }
    files
}

/// Runs `rdev` to its end and answers its exit code, stderr and peak RSS (KiB). The peak is
/// the kernel's high-water mark of the process's own memory (`VmHWM`), sampled until it exits:
/// `wait4`'s `ru_maxrss` would not do, since a child spawned from this (large) test process
/// inherits its parent's high-water mark through the spawn.
fn run_measured(rdev: &Rdev, args: &[&str]) -> (i32, String, i64) {
    let stderr_path = rdev.home.path().join(format!("stderr-{}", uuid::Uuid::new_v4().simple()));
    let mut child = std::process::Command::new(rdev_binary())
        .args(args)
        .env_clear()
        .envs(rdev.environment())
        .current_dir(rdev.home.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0;
    let status = loop {
        // The mark only grows, so the last sample before the exit is (within a few ms) the peak.
        let high_water = std::fs::read_to_string(&status_file).ok().and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("VmHWM:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse::<i64>().ok()
        });
        peak_kib = peak_kib.max(high_water.unwrap_or(0));
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    (status.code().unwrap_or(-1), std::fs::read_to_string(stderr_path).unwrap(), peak_kib)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_file_and_a_tree_go_both_ways_equal_with_a_small_client() {
    let app = TestApp::on(Db::Sqlite).await;
    let rdev = Rdev::for_app(&app);
    let home = rdev.home.path().to_owned();

    // 100 MiB that compresses to nothing useful: every 1 MiB block differs.
    let big = home.join("big.bin");
    {
        use std::io::Write;
        let mut file = std::io::BufWriter::new(std::fs::File::create(&big).unwrap());
        let mut block = vec![0u8; 1 << 20];
        for i in 0..100u32 {
            for (j, byte) in block.iter_mut().enumerate() {
                *byte = (j as u32).wrapping_mul(2654435761).wrapping_add(i).to_le_bytes()[1];
            }
            block[..4].copy_from_slice(&i.to_le_bytes());
            file.write_all(&block).unwrap();
        }
    }
    let rdev_up = rdev.clone();
    let up = tokio::task::spawn_blocking(move || run_measured(&rdev_up, &["cp", "big.bin", "hello:data/big.bin"]))
        .await
        .unwrap();
    assert_eq!(up.0, 0, "{}", up.1);
    assert_eq!(up.1, "", "no progress bar (nor anything else) when stdout is a pipe");
    assert_eq!(sha256_of(&app.project_path("hello").join("data/big.bin")), sha256_of(&big));
    let rdev_down = rdev.clone();
    let down = tokio::task::spawn_blocking(move || run_measured(&rdev_down, &["cp", "hello:data/big.bin", "back.bin"]))
        .await
        .unwrap();
    assert_eq!(down.0, 0, "{}", down.1);
    assert_eq!(sha256_of(&home.join("back.bin")), sha256_of(&big));
    assert!(up.2 < MAX_RSS_KIB && down.2 < MAX_RSS_KIB, "peak RSS {} KiB up, {} KiB down", up.2, down.2);
    println!("rdev cp of 100 MiB: peak RSS {} KiB up, {} KiB down", up.2, down.2);

    // A tree: nested folders, every byte value, an empty file.
    let tree = home.join("tree");
    std::fs::create_dir_all(tree.join("a/b/c")).unwrap();
    std::fs::write(tree.join("top.txt"), "top\n").unwrap();
    std::fs::write(tree.join("a/bytes.bin"), (0..=255u8).collect::<Vec<_>>()).unwrap();
    std::fs::write(tree.join("a/b/c/deep.txt"), "deep\n").unwrap();
    std::fs::write(tree.join("a/b/empty"), "").unwrap();
    let ran = rdev.run(&["cp", "tree", "hello:"]).await;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert_eq!(tree_digest(&app.project_path("hello").join("tree")), tree_digest(&tree));
    let ran = rdev.run(&["cp", "hello:tree", "tree-back"]).await;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert_eq!(tree_digest(&home.join("tree-back")), tree_digest(&tree));
    // Into an existing folder it goes by its name, as with cp.
    std::fs::create_dir(home.join("into")).unwrap();
    let ran = rdev.run(&["cp", "hello:tree/a", "into"]).await;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert_eq!(tree_digest(&home.join("into/a")), tree_digest(&tree.join("a")));
}

#[tokio::test]
async fn a_file_changed_on_the_server_since_rdev_copied_it_is_not_clobbered() {
    let app = TestApp::on(Db::Sqlite).await;
    let rdev = Rdev::for_app(&app);
    let home = rdev.home.path();
    let remote = app.project_path("hello").join("note.txt");
    std::fs::write(&remote, "v1\n").unwrap();
    assert_eq!(rdev.run(&["cp", "hello:note.txt", "note.txt"]).await.code, Some(0));
    std::fs::write(home.join("note.txt"), "mine\n").unwrap();
    std::fs::write(&remote, "theirs\n").unwrap();

    let refused = rdev.run(&["cp", "note.txt", "hello:note.txt"]).await;
    assert_eq!(refused.code, Some(1));
    assert!(refused.stderr.starts_with("rdev: PRECONDITION_FAILED: hello:note.txt not replaced"), "{refused:?}");
    assert_eq!(std::fs::read_to_string(&remote).unwrap(), "theirs\n", "their change is kept");
    let forced = rdev.run(&["cp", "--force", "note.txt", "hello:note.txt"]).await;
    assert_eq!(forced.code, Some(0), "{forced:?}");
    assert_eq!(std::fs::read_to_string(&remote).unwrap(), "mine\n");
    // What rdev wrote is the version it knows now: the next copy goes through.
    std::fs::write(home.join("note.txt"), "mine again\n").unwrap();
    assert_eq!(rdev.run(&["cp", "note.txt", "hello:note.txt"]).await.code, Some(0));
    let stale = rdev.run(&["cp", "--if-match", &"0".repeat(64), "note.txt", "hello:note.txt"]).await;
    assert!(stale.stderr.contains("its ETag is no longer \"0000"), "{stale:?}");
}

#[tokio::test]
async fn the_progress_bar_shows_on_a_terminal() {
    let app = TestApp::on(Db::Sqlite).await;
    let rdev = Rdev::for_app(&app);
    let home = rdev.home.path();
    let file = std::fs::File::create(home.join("big.bin")).unwrap();
    file.set_len(64 << 20).unwrap();
    let log = home.join("pane.log");
    let tmux = Tmux::start("bash --norc --noprofile");
    // Everything the pane shows, raw, so a bar that was drawn and cleared is still seen.
    tmux.run(&["pipe-pane", "-t", "t", "-o", &format!("cat >> {}", log.display())]);
    tmux.type_line(&format!(
        "cd {home}; {env} {bin} cp big.bin hello:big.bin; echo \"cp-exit=$?\"",
        home = home.display(),
        env = rdev.env_line(),
        bin = rdev_binary().display()
    ));
    tmux.wait_for_line("the end of the copy", |line| line == "cp-exit=0").await;
    let drawn = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
    assert!(drawn.contains("big.bin") && drawn.contains("64.00 MiB"), "no progress bar was drawn: {drawn:?}");
}
