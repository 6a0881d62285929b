//! Files' ETags at the cost of a `stat`: a file's sha256 is computed once and kept with what
//! identifies that version of the file (device, inode, size, modification and change times), so
//! a `HEAD` or `If-Match` of an unchanged file reads nothing. A file above `hash_max` bytes
//! (a sparse terabyte costs nothing to make and hours to hash) gets a strong ETag made of that
//! identity instead: any write changes its change time (which no caller can set back) or its
//! size, and a replaced file is another inode.

use std::{fs::File, os::unix::fs::FileExt as _, sync::Arc};

use moka::future::Cache;
use sha2::{Digest, Sha256};

use super::pool::FilePool;
use crate::domain::{DomainError, apikey::hex};

/// Bytes hashed per job on the pool.
const HASH_CHUNK: usize = 1024 * 1024;
/// Versions of files whose sha256 is kept.
const KEPT: u64 = 16_384;

/// What identifies one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Version {
    pub device: u64,
    pub inode: u64,
    pub size: u64,
    pub modified_ns: i128,
    pub changed_ns: i128,
}

impl Version {
    pub fn of(metadata: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt as _;
        let ns = |secs: i64, nanos: i64| i128::from(secs) * 1_000_000_000 + i128::from(nanos);
        Self {
            device: metadata.dev(),
            inode: metadata.ino(),
            size: metadata.size(),
            modified_ns: ns(metadata.mtime(), metadata.mtime_nsec()),
            changed_ns: ns(metadata.ctime(), metadata.ctime_nsec()),
        }
    }

    /// The ETag of a file too large to hash: a digest of its identity.
    fn identity_tag(&self) -> String {
        let identity = format!(
            "rdev-file-version:{}:{}:{}:{}:{}",
            self.device, self.inode, self.size, self.modified_ns, self.changed_ns
        );
        hex(&Sha256::digest(identity.as_bytes()))
    }
}

#[derive(Clone)]
pub struct Etags {
    kept: Cache<(u64, u64), (Version, String)>,
    hash_max: u64,
}

impl Etags {
    pub fn new(hash_max: u64) -> Self {
        Self { kept: Cache::new(KEPT), hash_max }
    }

    /// The ETag of `file`, which is at `version` now. Hashing runs a chunk per job on `pool`,
    /// so it stops when the request is dropped.
    pub async fn of(&self, pool: &FilePool, file: &Arc<File>, version: Version) -> Result<String, DomainError> {
        let key = (version.device, version.inode);
        if let Some((kept, tag)) = self.kept.get(&key).await
            && kept == version
        {
            return Ok(tag);
        }
        if version.size > self.hash_max {
            return Ok(version.identity_tag());
        }
        let mut hash = Sha256::new();
        let mut offset = 0u64;
        loop {
            let file = file.clone();
            let (hashed, read) = pool
                .run(move || -> std::io::Result<(Sha256, usize)> {
                    let mut buf = vec![0; HASH_CHUNK];
                    let read = file.read_at(&mut buf, offset)?;
                    hash.update(&buf[..read]);
                    Ok((hash, read))
                })
                .await?
                .map_err(|error| DomainError::internal(anyhow::Error::new(error).context("hashing a file")))?;
            hash = hashed;
            if read == 0 {
                break;
            }
            offset += read as u64;
        }
        let file = file.clone();
        let now = pool.run(move || file.metadata().map(|m| Version::of(&m))).await?;
        match now {
            // Changed while it was hashed: the hash is of no version. The one it is now gets its
            // identity tag, kept so that every read of that version gives the same.
            Ok(now) if now != version => {
                let tag = now.identity_tag();
                self.remember(now, tag.clone()).await;
                Ok(tag)
            }
            Ok(_) => {
                let tag = hex(&hash.finalize());
                self.remember(version, tag.clone()).await;
                Ok(tag)
            }
            Err(error) => Err(DomainError::internal(anyhow::Error::new(error).context("a file's metadata"))),
        }
    }

    /// Keeps `tag` (a sha256 computed as the file was written) as the ETag of `version`; the
    /// identity tag where the file is too large to be hashed on a read.
    pub async fn written(&self, version: Version, sha256: String) -> String {
        if version.size > self.hash_max {
            return version.identity_tag();
        }
        self.remember(version, sha256.clone()).await;
        sha256
    }

    async fn remember(&self, version: Version, tag: String) {
        self.kept.insert((version.device, version.inode), (version, tag)).await;
    }
}
