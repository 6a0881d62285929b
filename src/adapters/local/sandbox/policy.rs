//! What a confined command may read, decided once at start from where this server keeps its
//! own files: system folders are readable, unless the projects folder or the database lies in
//! one of them (then that folder is left out, or the start refused when it is one no shell can
//! do without).

use std::path::{Path, PathBuf};

use anyhow::bail;

use super::protocol::{HelperConfig, Network};

/// System software a shell needs, read-only (those missing on this host are skipped).
const READ_ONLY: &[&str] =
    &["/bin", "/sbin", "/usr", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "/nix", "/snap", "/sys"];

/// Folders no shell works without: finding the server's files in one stops the start.
const ESSENTIAL: &[&str] = &["/bin", "/sbin", "/usr", "/lib", "/lib64", "/etc"];

/// Device files commands read and write.
/// (A command's terminals are in a devpts instance of its own, granted per command.)
const DEVICES: &[&str] = &["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty"];

/// Secrets of the host that uid 0 could read even without capabilities (it owns them), covered
/// when the server runs as root.
const ROOT_ONLY_SECRETS: &[&str] =
    &["/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/ssl/private", "/etc/sudoers.d"];

/// What the configuration says about the server's own files.
#[derive(Debug, Clone, Default)]
pub struct ServerFiles {
    /// The SQLite database file, if that is the database.
    pub database_file: Option<PathBuf>,
    /// A folder holding the database's Unix socket (`postgres://…?host=/run/postgresql`).
    pub database_socket_dir: Option<PathBuf>,
}

/// The helper's configuration for `projects_root`. `extra_read_only` are folders the operator
/// adds (toolchains outside the system folders).
pub fn helper_config(
    projects_root: &Path,
    confine: bool,
    extra_read_only: &[PathBuf],
    files: &ServerFiles,
) -> anyhow::Result<(HelperConfig, Vec<String>)> {
    let projects_root = std::fs::canonicalize(projects_root)?;
    if confine && projects_root.starts_with("/run") {
        bail!("the projects folder {} is under /run, which commands see empty", projects_root.display());
    }
    let database_file = files.database_file.as_deref().map(absolute);
    let mut guarded = vec![projects_root.clone()];
    guarded.extend(database_file.clone());
    let mut warnings = Vec::new();
    let mut read_only = Vec::new();
    // Top-level links (`/bin` → `usr/bin` on merged-/usr systems) are made again in the
    // commands' root; what they lead to is bound there like any other folder.
    let mut links = Vec::new();
    let mut candidates = Vec::new();
    for path in READ_ONLY.iter().map(PathBuf::from).chain(extra_read_only.iter().cloned()) {
        match std::fs::read_link(&path) {
            Ok(target) if READ_ONLY.iter().any(|top| Path::new(top) == path) => links.push((path, target)),
            _ => candidates.push(path),
        }
    }
    for (link, _) in &links {
        if let Ok(target) = std::fs::canonicalize(link)
            && !candidates.iter().any(|c| target.starts_with(c))
        {
            candidates.push(target);
        }
    }
    for path in candidates {
        let Ok(canonical) = std::fs::canonicalize(&path) else { continue };
        if let Some(inside) = guarded.iter().find(|own| own.starts_with(&canonical)) {
            if ESSENTIAL.iter().any(|e| Path::new(e) == path) {
                bail!(
                    "{} is inside {}, which every command may read: keep the projects folder and the \
                     database elsewhere (or set RDEV_SANDBOX=off)",
                    inside.display(),
                    path.display()
                );
            }
            warnings.push(format!(
                "commands may not read {} because {} is inside it",
                path.display(),
                inside.display()
            ));
            continue;
        }
        if !read_only.iter().any(|kept: &PathBuf| canonical.starts_with(kept)) {
            read_only.retain(|kept: &PathBuf| !kept.starts_with(&canonical));
            read_only.push(canonical);
        }
    }
    let mut hidden: Vec<PathBuf> = files.database_socket_dir.iter().cloned().collect();
    if nix::unistd::geteuid().is_root() {
        hidden.extend(ROOT_ONLY_SECRETS.iter().map(PathBuf::from));
    }
    let config = HelperConfig {
        projects_root,
        confine,
        read_only,
        devices: DEVICES.iter().map(PathBuf::from).filter(|p| p.exists()).collect(),
        hidden,
        links,
        network: Network::None,
        limits: None,
        tmp_bytes: 512 << 20,
        uid: 0,
    };
    Ok((config, warnings))
}

fn absolute(path: &Path) -> PathBuf {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => {
            let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
            std::fs::canonicalize(parent).map(|p| p.join(name)).unwrap_or_else(|_| path.to_path_buf())
        }
        _ => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_folders_holding_server_files_are_left_out_or_refused() {
        let projects = tempfile::tempdir().unwrap();
        let (config, warnings) = helper_config(projects.path(), true, &[], &ServerFiles::default()).unwrap();
        assert!(config.read_only.iter().any(|p| p == Path::new("/usr")));
        assert!(warnings.is_empty());

        let extra = projects.path().parent().unwrap().to_path_buf();
        let (config, warnings) =
            helper_config(projects.path(), true, std::slice::from_ref(&extra), &ServerFiles::default()).unwrap();
        assert!(!config.read_only.contains(&std::fs::canonicalize(&extra).unwrap()), "{config:?}");
        assert_eq!(warnings.len(), 1, "{warnings:?}");

        let files = ServerFiles { database_file: Some("/etc/rdev.db".into()), database_socket_dir: None };
        assert!(helper_config(projects.path(), true, &[], &files).is_err());
    }
}
