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
fn ports_and_services_know_no_http_database_cluster_or_api_document_crate() {
    for layer in ["ports", "services"] {
        let offending =
            offending_lines(layer, &["axum", "sqlx", "kube", "k8s_openapi", "reqwest", "tower_http", "utoipa"]);
        assert!(offending.is_empty(), "{layer}: {offending:#?}");
    }
}

/// The modules of this crate a file names: in `use crate::…` statements (grouped ones too,
/// across lines) and in `crate::…` paths in code.
fn crate_modules_used(text: &str) -> Vec<String> {
    let code: String =
        text.lines().map(|line| line.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join(" ");
    let mut used = Vec::new();
    for (start, _) in code.match_indices("crate::") {
        let rest = &code[start + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a::b, c, d::{e, f}}`: the top-level names of the group.
            let (mut depth, mut item) = (0, String::new());
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => used.push(std::mem::take(&mut item)),
                    _ => item.push(c),
                }
            }
            used.push(item);
        } else {
            used.push(rest.to_owned());
        }
    }
    used.iter()
        .map(|path| {
            path.trim().split(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap_or_default().to_owned()
        })
        .filter(|name| !name.is_empty())
        .collect()
}

/// Files under `src/<layer>` that use any of `outer` (modules of this crate).
fn outer_modules_used(layer: &str, outer: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(layer);
    let mut found = Vec::new();
    for file in rust_files(&root) {
        let used = crate_modules_used(&std::fs::read_to_string(&file).unwrap());
        found.extend(
            used.into_iter().filter(|m| outer.contains(&m.as_str())).map(|m| format!("{}: {m}", file.display())),
        );
    }
    found
}

#[test]
fn the_checker_sees_grouped_and_inline_imports() {
    let text = "use crate::{\n    domain::X,\n    http::{a, b},\n};\nfn f() { crate::adapters::y(); }";
    assert_eq!(crate_modules_used(text), ["domain", "http", "adapters"]);
}

#[test]
fn inner_layers_import_no_outer_layer() {
    for layer in ["domain", "ports", "services"] {
        let offending = outer_modules_used(layer, &["http", "adapters", "app", "config", "cli"]);
        assert!(offending.is_empty(), "{layer}: {offending:#?}");
    }
}

#[test]
fn adapters_import_no_http_or_services() {
    let offending = outer_modules_used("adapters", &["http", "services", "app", "cli"]);
    assert!(offending.is_empty(), "{offending:#?}");
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
