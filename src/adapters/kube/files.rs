//! `ProjectFiles` over pod exec: constant POSIX scripts (paths are arguments, never script
//! text) that resolve the path inside the container (`readlink -f`) and refuse it unless it
//! stays under the project root (the exec's working folder), then list with `stat`, read with
//! `cat`, write through stdin to a temporary file then `mv`, or delete with `rm`.
//!
//! A write sends exactly `N` bytes and the script reads them with `head -c N`, so it needs no
//! stdin close (v4 has none). Without a `Content-Length`, the body is first spooled to a file
//! on this server (never to memory).

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, api::AttachedProcess};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::exec::{attach, exit_code};
use crate::{
    domain::{
        DomainError, FileEntry, FileType, FolderPage, IfMatch, PageKeeper, Project, ProjectPath, WrittenFile,
        files::{file_not_found, file_too_large, not_a_regular_file, path_escapes},
    },
    ports::{ByteStream, FileContent, FolderEntries, ProjectFiles, WriteRules},
};

/// Checks that a path resolves inside the project root (`$root`, the working folder).
/// A path that does not resolve (a missing folder on the way) is not found when what does exist
/// of it is inside, and outside otherwise.
const CHECK: &str = r#"root=$(pwd -P)
within() { case $1 in "$root"|"$root"/*) return 0 ;; *) return 1 ;; esac; }
inside() {
  if r=$(readlink -f -- "$1" 2>/dev/null); then within "$r" || exit 201; return 0; fi
  a=$(dirname -- "$1"); while [ ! -e "$a" ] && [ "$a" != . ]; do a=$(dirname -- "$a"); done
  r=$(readlink -f -- "$a" 2>/dev/null) && within "$r" && exit 202; exit 201
}
"#;

const LIST: &str = r#"p=${1:-.}; inside "$p"; [ -e "$p" ] || exit 202; [ -d "$p" ] || exit 205; cd -- "$p" || exit 202
for f in * .[!.]* ..?*; do
  { [ -e "$f" ] || [ -L "$f" ]; } || continue
  printf '%s\0' "$f"; stat -c '%F/%s/%a/%Y' -- "$f"
done"#;

const READ: &str = r#"p=$1; inside "$p"; [ -e "$p" ] || exit 202; [ -d "$p" ] && exit 203; [ -f "$p" ] || exit 211
sha256sum < "$p" | cut -c1-64 && wc -c < "$p" && exec cat -- "$p""#;

const WRITE: &str = r#"p=$1; n=$2; want=$3; d=$(dirname -- "$p")
a=$d; while [ ! -e "$a" ] && [ "$a" != . ]; do a=$(dirname -- "$a"); done; inside "$a"
mkdir -p -- "$d" 2>/dev/null || exit 210; inside "$d"; { [ -e "$p" ] || [ -L "$p" ]; } && inside "$p"; [ -d "$p" ] && exit 203
[ -e "$p" ] && { [ -f "$p" ] || exit 211; }
t="$d/.rdev-upload-$$"
head -c "$n" > "$t" || { rm -f -- "$t"; exit 208; }
[ "$(wc -c < "$t")" -eq "$n" ] || { rm -f -- "$t"; exit 207; }
case $want in -) ;; '*') [ -f "$p" ] || { rm -f -- "$t"; exit 204; } ;;
  *) [ "$(sha256sum < "$p" 2>/dev/null | cut -c1-64)" = "$want" ] || { rm -f -- "$t"; exit 204; } ;; esac
e=0; [ -e "$p" ] && e=1
h=$(sha256sum < "$t" | cut -c1-64)
mv -f -- "$t" "$p" || { rm -f -- "$t"; exit 208; }
echo "$e $h""#;

const DELETE: &str = r#"p=$1; want=$3; inside "$(dirname -- "$p")"; [ "$(readlink -f -- "$p")" = "$root" ] && exit 209
case $want in -|'*') ;; *) [ -f "$p" ] && [ "$(sha256sum < "$p" | cut -c1-64)" = "$want" ] || exit 204 ;; esac
if [ -L "$p" ] || [ -f "$p" ]; then rm -f -- "$p"
elif [ -d "$p" ]; then [ "$2" = recursive ] || exit 206; rm -rf -- "$p"
else exit 202; fi"#;

pub struct KubeFiles {
    pods: Api<Pod>,
    api_timeout: Duration,
}

impl KubeFiles {
    pub fn new(client: kube::Client, namespace: &str, api_timeout: Duration) -> Self {
        Self { pods: Api::namespaced(client, namespace), api_timeout }
    }

    async fn exec(
        &self,
        project: &Project,
        script: &str,
        args: &[&str],
        stdin: bool,
    ) -> Result<AttachedProcess, DomainError> {
        let mut argv = vec!["/bin/sh".to_owned(), "-c".to_owned(), format!("{CHECK}{script}"), "rdev-files".to_owned()];
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        attach(&self.pods, project, argv, stdin, self.api_timeout).await
    }
}

/// What a script's exit status means.
fn refusal(code: i32, path: &ProjectPath) -> DomainError {
    match code {
        201 => path_escapes(),
        202 => file_not_found(path),
        203 => DomainError::invalid("path", "is a folder"),
        204 => DomainError::PreconditionFailed("the file's ETag differs from If-Match".into()),
        205 => DomainError::invalid("path", "is a file, not a folder"),
        206 => DomainError::invalid("path", "is a folder: delete it with recursive=true"),
        207 => DomainError::invalid("body", "broke off"),
        209 => DomainError::invalid("path", "is the project's folder"),
        210 => DomainError::invalid("path", "a part of it is not a folder"),
        211 => not_a_regular_file(),
        other => DomainError::internal(anyhow::anyhow!("file script in the pod exited {other}")),
    }
}

/// The exit status of a finished exec (0 on success).
async fn status(process: &mut AttachedProcess) -> Result<i32, DomainError> {
    let status = process
        .take_status()
        .ok_or_else(|| DomainError::internal(anyhow::anyhow!("exec without a status channel")))?
        .await
        .ok_or_else(|| DomainError::executor_unavailable("pod exec stream ended without a status"))?;
    exit_code(&status)
}

/// All of stdout, then the status.
async fn finish(mut process: AttachedProcess) -> Result<(Vec<u8>, i32), DomainError> {
    let mut out = Vec::new();
    let mut stderr = process.stderr();
    if let Some(mut stdout) = process.stdout() {
        let drain_err = async {
            if let Some(stderr) = stderr.as_mut() {
                let _ = tokio::io::copy(stderr, &mut tokio::io::sink()).await;
            }
        };
        let (read, ()) = tokio::join!(stdout.read_to_end(&mut out), drain_err);
        read.map_err(|e| DomainError::executor_unavailable(format!("reading pod exec output: {e}")))?;
    }
    Ok((out, status(&mut process).await?))
}

/// Longest record of the listing script: a name (at most 255 bytes on Linux) and its `stat`.
const MAX_RECORD: u64 = 4096;

/// Offers each `name\0stat\n` record of the listing script to `keeper`.
async fn keep_page(
    mut listing: impl tokio::io::AsyncBufRead + Unpin,
    keeper: &mut PageKeeper<FileEntry>,
) -> std::io::Result<()> {
    let (mut name, mut stat) = (Vec::new(), Vec::new());
    loop {
        name.clear();
        stat.clear();
        if (&mut listing).take(MAX_RECORD).read_until(0, &mut name).await? == 0 {
            return Ok(());
        }
        (&mut listing).take(MAX_RECORD).read_until(b'\n', &mut stat).await?;
        if name.pop() != Some(0) || stat.last() != Some(&b'\n') {
            return Err(std::io::Error::other("a listing record past its bound"));
        }
        if keeper.wants(&name)
            && let Some(entry) = entry_of(&name, &String::from_utf8_lossy(&stat))
        {
            keeper.offer(name.clone(), entry);
        }
    }
}

fn entry_of(name: &[u8], stat: &str) -> Option<FileEntry> {
    let mut fields = stat.trim_end().rsplitn(4, '/');
    let (mtime, mode, size, kind) = (fields.next()?, fields.next()?, fields.next()?, fields.next()?);
    let kind = match kind {
        "regular file" | "regular empty file" => FileType::File,
        "directory" => FileType::Dir,
        "symbolic link" => FileType::Symlink,
        _ => FileType::Other,
    };
    Some(FileEntry {
        name: String::from_utf8_lossy(name).into_owned(),
        kind,
        size: size.parse().ok()?,
        mode: mode.to_owned(),
        modified_at: mtime.parse().ok().and_then(|secs| DateTime::<Utc>::from_timestamp(secs, 0)),
    })
}

#[async_trait]
impl ProjectFiles for KubeFiles {
    /// The pod lists the whole folder; the page is kept here as the listing streams by, in
    /// memory proportional to the page.
    async fn list(
        &self,
        project: &Project,
        path: &ProjectPath,
        page: &FolderPage,
    ) -> Result<FolderEntries, DomainError> {
        let mut process = self.exec(project, LIST, &[path.as_str()], false).await?;
        let mut keeper = PageKeeper::new(page.clone());
        let mut stderr = process.stderr();
        if let Some(stdout) = process.stdout() {
            let drain_err = async {
                if let Some(stderr) = stderr.as_mut() {
                    let _ = tokio::io::copy(stderr, &mut tokio::io::sink()).await;
                }
            };
            let (read, ()) = tokio::join!(keep_page(BufReader::new(stdout), &mut keeper), drain_err);
            read.map_err(|e| DomainError::executor_unavailable(format!("reading pod exec output: {e}")))?;
        }
        let code = status(&mut process).await?;
        if code != 0 {
            return Err(refusal(code, path));
        }
        let (entries, more) = keeper.finish();
        Ok(FolderEntries { entries, more })
    }

    async fn read(&self, project: &Project, path: &ProjectPath) -> Result<FileContent, DomainError> {
        let mut process = self.exec(project, READ, &[path.as_str()], false).await?;
        let stdout = process.stdout().ok_or_else(|| DomainError::internal(anyhow::anyhow!("exec without stdout")))?;
        let mut reader = BufReader::new(stdout);
        let (mut sha256, mut size) = (String::new(), String::new());
        let lost = |e: std::io::Error| DomainError::executor_unavailable(format!("reading pod exec output: {e}"));
        reader.read_line(&mut sha256).await.map_err(lost)?;
        reader.read_line(&mut size).await.map_err(lost)?;
        let (sha256, size) = (sha256.trim().to_owned(), size.trim().parse::<u64>());
        let Ok(size) = size else {
            // The script refused before printing: its status says why.
            let _ = reader.read_to_end(&mut Vec::new()).await;
            return Err(refusal(status(&mut process).await?, path));
        };
        let body = futures_util::stream::unfold((reader, process, size), |(mut reader, process, left)| async move {
            if left == 0 {
                return None;
            }
            let mut buf = vec![0; 64 * 1024];
            match reader.read(&mut buf).await {
                Ok(0) => Some((Err(DomainError::executor_unavailable("the file ended early")), (reader, process, 0))),
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), (reader, process, left.saturating_sub(n as u64))))
                }
                Err(e) => Some((
                    Err(DomainError::executor_unavailable(format!("reading the file: {e}"))),
                    (reader, process, 0),
                )),
            }
        });
        Ok(FileContent { size, etag: sha256, body: body.boxed() })
    }

    async fn write(
        &self,
        project: &Project,
        path: &ProjectPath,
        body: ByteStream,
        rules: WriteRules,
    ) -> Result<WrittenFile, DomainError> {
        let (length, body) = match rules.length {
            Some(length) if length > rules.max_bytes => return Err(file_too_large(rules.max_bytes)),
            Some(length) => (length, body),
            None => spooled(body, rules.max_bytes).await?,
        };
        let want = match &rules.if_match {
            None => "-".to_owned(),
            Some(IfMatch::Any) => "*".to_owned(),
            Some(IfMatch::Tag(tag)) => tag.clone(),
        };
        let mut process = self.exec(project, WRITE, &[path.as_str(), &length.to_string(), &want], true).await?;
        let mut stdin = process.stdin().ok_or_else(|| DomainError::internal(anyhow::anyhow!("exec without stdin")))?;
        let feed = async {
            let mut body = body;
            let mut sent = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                sent += chunk.len() as u64;
                if sent > length {
                    return Err(DomainError::invalid("body", "is longer than its Content-Length"));
                }
                stdin
                    .write_all(&chunk)
                    .await
                    .map_err(|e| DomainError::executor_unavailable(format!("sending the file: {e}")))?;
            }
            // Held open (v4 cannot close stdin alone); the script stops after `length` bytes.
            Ok::<_, DomainError>(stdin)
        };
        let stdin = match feed.await {
            Ok(stdin) => stdin,
            Err(error) => {
                process.abort();
                return Err(error);
            }
        };
        let (out, code) = finish(process).await?;
        drop(stdin);
        if code != 0 {
            return Err(refusal(code, path));
        }
        let out = String::from_utf8_lossy(&out);
        let (existed, sha256) = out
            .trim()
            .split_once(' ')
            .ok_or_else(|| DomainError::internal(anyhow::anyhow!("write script said {out:?}")))?;
        Ok(WrittenFile {
            path: path.display(),
            size: length,
            sha256: sha256.to_owned(),
            etag: sha256.to_owned(),
            created: existed == "0",
        })
    }

    async fn delete(
        &self,
        project: &Project,
        path: &ProjectPath,
        recursive: bool,
        if_match: Option<&IfMatch>,
    ) -> Result<(), DomainError> {
        let mode = if recursive { "recursive" } else { "-" };
        let want = match if_match {
            None | Some(IfMatch::Any) => "-",
            Some(IfMatch::Tag(tag)) => tag.as_str(),
        };
        let (_, code) = finish(self.exec(project, DELETE, &[path.as_str(), mode, want], false).await?).await?;
        if code != 0 {
            return Err(refusal(code, path));
        }
        Ok(())
    }
}

/// A body without a length, spooled to a temporary file here (at most `most` bytes), and read
/// back as a stream of known length.
async fn spooled(mut body: ByteStream, most: u64) -> Result<(u64, ByteStream), DomainError> {
    let failed = |e: std::io::Error| DomainError::internal(anyhow::Error::new(e).context("spooling an upload"));
    let path = std::env::temp_dir().join(format!("rdev-upload-{}", uuid::Uuid::new_v4().simple()));
    let mut file =
        tokio::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path).await.map_err(failed)?;
    // Unlinked at once: the open file is all that is left, gone when it is dropped.
    let _ = tokio::fs::remove_file(&path).await;
    let mut length = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        length += chunk.len() as u64;
        if length > most {
            return Err(file_too_large(most));
        }
        file.write_all(&chunk).await.map_err(failed)?;
    }
    file.flush().await.map_err(failed)?;
    use tokio::io::AsyncSeekExt;
    file.rewind().await.map_err(failed)?;
    let stream = futures_util::stream::unfold(file, |mut file| async move {
        let mut buf = vec![0; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), file))
            }
            Err(e) => {
                Some((Err(DomainError::internal(anyhow::Error::new(e).context("reading a spooled upload"))), file))
            }
        }
    });
    Ok((length, stream.boxed()))
}
