//! The dependency rule of the hexagon, checked on the source: inner layers name no outer
//! technology, and errors become HTTP responses in exactly one place.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// Lines of code (comments left out) under `src/<layer>` that mention any of `forbidden`.
fn offending_lines(layer: &str, forbidden: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(layer);
    let mut found = Vec::new();
    for file in rust_files(&root) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            if forbidden.iter().any(|name| code.contains(&format!("{name}::")) || code.contains(&format!("use {name}")))
            {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn the_domain_knows_no_http_database_cluster_or_process_crate() {
    let offending = offending_lines("domain", &["axum", "sqlx", "kube", "k8s_openapi", "reqwest", "tokio"]);
    assert!(offending.is_empty(), "{offending:#?}");
}

#[test]
fn ports_and_services_know_no_http_database_or_cluster_crate() {
    for layer in ["ports", "services"] {
        let offending = offending_lines(layer, &["axum", "sqlx", "kube", "k8s_openapi", "reqwest", "tower_http"]);
        assert!(offending.is_empty(), "{layer}: {offending:#?}");
    }
}

#[test]
fn errors_become_responses_in_one_place() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let impls: Vec<_> = rust_files(&src)
        .into_iter()
        .filter(|file| std::fs::read_to_string(file).unwrap().contains("impl IntoResponse for"))
        .collect();
    assert_eq!(impls, [src.join("http/error.rs")]);
}
