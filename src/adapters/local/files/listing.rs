//! One page of a folder, in memory proportional to the page, not the folder: the names are read
//! in the folder's own order and only those of the page are kept (`PageKeeper`), then only
//! those are looked at.

use std::{ffi::OsString, os::unix::ffi::OsStringExt as _};

use cap_std::fs::Dir;

use crate::domain::{FolderPage, PageKeeper};

/// The names of the page `page` asks for, sorted, and whether more follow. Blocking.
pub fn page_names(folder: &Dir, page: &FolderPage) -> std::io::Result<(Vec<Vec<u8>>, bool)> {
    let mut keeper = PageKeeper::new(page.clone());
    for entry in folder.entries()? {
        keeper.offer(entry?.file_name().into_vec(), ());
    }
    let (kept, more) = keeper.finish();
    Ok((kept.into_iter().map(|(name, ())| name).collect(), more))
}

/// A name as the file system takes it.
pub fn os_name(name: &[u8]) -> OsString {
    OsString::from_vec(name.to_vec())
}
