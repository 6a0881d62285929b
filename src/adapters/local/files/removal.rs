//! Deleting a folder tree with a bounded number of open descriptors and no recursion, however
//! deep it is. The tree is first renamed into the scratch folder (so it leaves the project at
//! once, whole); then each folder in turn is emptied of its files, and its sub-folders are renamed
//! up into the scratch folder beside it rather than descended into. At any moment two folders are
//! open, and the work left is a list of names in the scratch folder, taken a slice at a time.
//! What a crash leaves there is taken at the next start (`scratch`).

use std::io;

use cap_fs_ext::DirExt as _;
use cap_std::fs::Dir;

/// Names one slice removes before it hands the pool back.
const SLICE: usize = 1024;
/// The prefix of what is in the scratch folder.
pub const SCRATCH_PREFIX: &str = ".rdev-";

/// A fresh name in the scratch folder.
pub fn scratch_name(kind: &str) -> String {
    format!("{SCRATCH_PREFIX}{kind}-{}", uuid::Uuid::new_v4().simple())
}

/// The folders of a deletion still to be emptied and removed, by their names in `scratch`.
pub struct Removal {
    pending: Vec<String>,
}

impl Removal {
    /// Moves `name` (a folder in `parent`) into `scratch`, out of the project at once.
    pub fn begin(parent: &Dir, name: &str, scratch: &Dir) -> io::Result<Self> {
        let staged = scratch_name("delete");
        parent.rename(name, scratch, &staged)?;
        Ok(Self { pending: vec![staged] })
    }

    /// The folders `names` in the scratch folder, to be removed (what a crash left).
    pub fn of(names: Vec<String>) -> Self {
        Self { pending: names }
    }

    pub fn is_done(&self) -> bool {
        self.pending.is_empty()
    }

    /// Removes up to `SLICE` names. Blocking.
    pub fn step(&mut self, scratch: &Dir) -> io::Result<()> {
        let mut budget = SLICE;
        while budget > 0 {
            let Some(name) = self.pending.pop() else { return Ok(()) };
            let folder = match scratch.open_dir_nofollow(&name) {
                Ok(folder) => folder,
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(error) => return Err(error),
            };
            let mut emptied = true;
            for entry in folder.entries()? {
                if budget == 0 {
                    emptied = false;
                    break;
                }
                budget -= 1;
                let entry = entry?;
                let child = entry.file_name();
                if entry.file_type()?.is_dir() {
                    // An empty folder goes at once; a full one moves up beside this one.
                    if folder.remove_dir(&child).is_err() {
                        let hoisted = scratch_name("delete");
                        folder.rename(&child, scratch, &hoisted)?;
                        self.pending.push(hoisted);
                    }
                } else {
                    folder.remove_file(&child)?;
                }
            }
            drop(folder);
            // Not empty yet (the slice ended, or a command added to it): again later.
            if !emptied || scratch.remove_dir(&name).is_err() {
                self.pending.insert(0, name);
            }
        }
        Ok(())
    }
}
