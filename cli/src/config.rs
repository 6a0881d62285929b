//! The stored login: a server URL and a key, in the user's config folder, readable by the user
//! alone. `RDEV_URL` and `RDEV_API_KEY` override it.

use std::{
    fs,
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::PathBuf,
};

use serde::{Deserialize, Serialize};

use crate::error::{CliError, Result};

pub const DEFAULT_URL: &str = "http://localhost:8080";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Login {
    pub url: String,
    pub api_key: String,
}

/// `$XDG_CONFIG_HOME/rdev` (or the platform's config folder).
pub fn dir() -> Result<PathBuf> {
    dirs::config_dir()
        .map(|dir| dir.join("rdev"))
        .ok_or_else(|| CliError::Usage("no config folder: set HOME or XDG_CONFIG_HOME".into()))
}

fn login_file() -> Result<PathBuf> {
    Ok(dir()?.join("login.json"))
}

pub fn load() -> Result<Option<Login>> {
    let path = login_file()?;
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|error| {
            CliError::Usage(format!("{} is not a login rdev wrote ({error}): run `rdev login`", path.display()))
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(CliError::io(format!("reading {}", path.display()))(error)),
    }
}

/// Writes `bytes` to `name` in the config folder, replacing it whole, mode 0600 in a 0700 folder.
pub fn write_private(name: &str, bytes: &[u8]) -> Result<()> {
    let dir = dir()?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(CliError::io(format!("creating {}", dir.display())))?;
    let temporary = dir.join(format!(".{name}.{}", std::process::id()));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(CliError::io(format!("writing {}", temporary.display())))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(CliError::io(format!("writing {}", temporary.display())))?;
    fs::rename(&temporary, dir.join(name)).map_err(CliError::io(format!("writing {}", dir.join(name).display())))
}

pub fn save(login: &Login) -> Result<PathBuf> {
    let bytes = serde_json::to_vec_pretty(login).map_err(|error| CliError::Protocol(error.to_string()))?;
    write_private("login.json", &bytes)?;
    login_file()
}

/// Removes the stored login; false when there was none.
pub fn remove() -> Result<bool> {
    let path = login_file()?;
    match fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(CliError::io(format!("removing {}", path.display()))(error)),
    }
}

/// The login to use: `--url`/`RDEV_URL` and `RDEV_API_KEY` over what is stored.
pub fn resolve(url: Option<&str>) -> Result<Login> {
    let stored = load()?;
    let key = std::env::var("RDEV_API_KEY").ok().filter(|key| !key.is_empty());
    let url = url.map(str::to_owned).or_else(|| stored.as_ref().map(|login| login.url.clone()));
    let api_key = key.or_else(|| stored.map(|login| login.api_key));
    match (url, api_key) {
        (Some(url), Some(api_key)) => Ok(Login { url, api_key }),
        (None, Some(api_key)) => Ok(Login { url: DEFAULT_URL.into(), api_key }),
        _ => Err(CliError::NotLoggedIn),
    }
}
