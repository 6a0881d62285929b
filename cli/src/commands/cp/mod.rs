//! `rdev cp SRC DST`: files and folders between here and a project (`PROJECT:PATH` on one side),
//! streamed both ways with one progress bar on a terminal. A project file rdev copied before is
//! replaced only if it is still the version rdev saw (`If-Match` with the ETag it recorded).

mod download;
mod etags;
mod upload;

use std::{io::IsTerminal, path::PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::{
    args::CpArgs,
    client::Client,
    error::{CliError, Result},
};

/// One side of a copy.
#[derive(Debug, PartialEq, Eq)]
enum Location {
    Local(PathBuf),
    /// A path in a project, relative to its root ("" is the root).
    Project {
        project: String,
        path: String,
    },
}

impl Location {
    /// `PROJECT:PATH` names a project (as scp names a host); a path with a `/` before the
    /// first `:` is local, and so is `./a:b`.
    fn parse(text: &str) -> Self {
        match text.split_once(':') {
            Some((project, path)) if !project.is_empty() && !project.contains('/') => {
                Self::Project { project: project.to_owned(), path: path.trim_matches('/').to_owned() }
            }
            _ => Self::Local(PathBuf::from(text)),
        }
    }
}

pub async fn cp(client: &Client, args: &CpArgs) -> Result<u8> {
    match (Location::parse(&args.source), Location::parse(&args.destination)) {
        (Location::Local(local), Location::Project { project, path }) => {
            upload::upload(client, &local, &project, &path, args).await?;
        }
        (Location::Project { project, path }, Location::Local(local)) => {
            download::download(client, &project, &path, &local).await?;
        }
        _ => return Err(CliError::Usage("one side must be PROJECT:PATH and the other a local path".into())),
    }
    Ok(0)
}

/// A bar over all the bytes of a copy, drawn on stderr when stdout is a terminal; none in a
/// pipe or a script.
fn progress(total: u64) -> ProgressBar {
    let target =
        if std::io::stdout().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let bar = ProgressBar::with_draw_target(Some(total), target);
    if let Ok(style) = ProgressStyle::with_template("{msg:20!} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {eta}") {
        bar.set_style(style);
    }
    bar
}

/// `parent/name`, where "" is the project root.
fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() { name.to_owned() } else { format!("{parent}/{name}") }
}

/// The last segment of a project path ("" for the root).
fn last_segment(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_paths_are_told_from_local_ones() {
        let project = |project: &str, path: &str| Location::Project { project: project.into(), path: path.into() };
        assert_eq!(Location::parse("hello:src/a.txt"), project("hello", "src/a.txt"));
        assert_eq!(Location::parse("hello:"), project("hello", ""));
        assert_eq!(Location::parse("hello:/src/"), project("hello", "src"));
        assert_eq!(Location::parse("./a:b"), Location::Local("./a:b".into()));
        assert_eq!(Location::parse("/tmp/x:y"), Location::Local("/tmp/x:y".into()));
        assert_eq!(Location::parse("plain"), Location::Local("plain".into()));
        assert_eq!(join("", "a"), "a");
        assert_eq!(join("src", "a"), "src/a");
        assert_eq!(last_segment("src/a"), "a");
    }
}
