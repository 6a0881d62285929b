//! `rdev login` and `rdev logout`.

use std::io::{BufRead, IsTerminal};

use reqwest::Method;

use crate::{
    client::Client,
    config::{self, DEFAULT_URL, Login},
    error::{CliError, Result},
};

pub async fn login(url: Option<String>) -> Result<u8> {
    let url = url.unwrap_or_else(|| DEFAULT_URL.to_owned());
    let api_key = match std::env::var("RDEV_API_KEY") {
        Ok(key) if !key.is_empty() => key,
        _ => ask_for_key()?,
    };
    let login = Login { url, api_key: api_key.trim().to_owned() };
    let client = Client::new(&login)?;
    // Any route that needs a key tells a known key from an unknown one; one without
    // `projects:read` (403) is still a key.
    match client.send(client.request(Method::GET, "/projects")).await {
        Ok(_) | Err(CliError::Api { status: 403, .. }) => {}
        Err(error) => return Err(error),
    }
    let path = config::save(&login)?;
    eprintln!("rdev: logged in to {}; the key is stored in {} (mode 0600)", login.url, path.display());
    Ok(0)
}

fn ask_for_key() -> Result<String> {
    if std::io::stdin().is_terminal() {
        return rpassword::prompt_password("API key: ").map_err(CliError::io("reading the key"));
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(CliError::io("reading the key from stdin"))?;
    if line.trim().is_empty() {
        return Err(CliError::Usage("no key: type it, pipe it in, or set RDEV_API_KEY".into()));
    }
    Ok(line)
}

pub fn logout() -> Result<u8> {
    if config::remove()? {
        eprintln!("rdev: logged out");
    } else {
        eprintln!("rdev: not logged in");
    }
    Ok(0)
}
