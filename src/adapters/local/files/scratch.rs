//! The scratch folder beside the projects (`.rdev-scratch`, mode 0700, out of every project's
//! sight): uploads are written there before their rename, and deleted folders wait there for
//! their removal. Each server has a folder of its own in it, named at random and held with an
//! exclusive `flock` for as long as the server runs. At start a server takes over every folder no
//! live server holds (what a crash left: half-written uploads, half-removed trees) and removes it
//! in the background, so servers sharing a projects folder never remove each other's work.

use std::{io, path::Path, sync::Arc};

use cap_std::{ambient_authority, fs::Dir};
use nix::fcntl::{Flock, FlockArg};

use super::removal::{Removal, scratch_name};

/// The scratch folder, in the projects folder (no project id starts with a dot).
const SCRATCH: &str = ".rdev-scratch";

/// This server's own scratch folder.
pub struct Scratch {
    own: Arc<Dir>,
    dev: u64,
    /// Held while the server runs: a folder whose lock can be taken belongs to no one.
    _held: Flock<std::fs::File>,
}

impl Scratch {
    /// Makes this server's folder and moves every abandoned one into it; the returned removal
    /// takes them away. Blocking (at start).
    pub fn open(projects: &Path) -> io::Result<(Self, Removal)> {
        use cap_std::fs::MetadataExt as _;
        let shared_path = projects.join(SCRATCH);
        let shared = make_private_dir(&shared_path)?;
        let name = scratch_name("server");
        shared.create_dir(&name)?;
        let own = shared.open_dir(&name)?;
        // cap-std may hold folders as `O_PATH` descriptors, which cannot be locked.
        let held = lock(&shared_path.join(&name))?.map_err(|_| io::Error::other("a fresh scratch folder is locked"))?;
        let mut abandoned = Vec::new();
        for entry in shared.entries()? {
            let entry = entry?;
            let Ok(other) = entry.file_name().into_string() else { continue };
            if other == name {
                continue;
            }
            if !entry.file_type()?.is_dir() {
                shared.remove_file(&other)?;
                continue;
            }
            // Locked by a live server: its work in flight.
            let Ok(Ok(_unused)) = lock(&shared_path.join(&other)) else { continue };
            let staged = scratch_name("abandoned");
            shared.rename(&other, &own, &staged)?;
            abandoned.push(staged);
        }
        let dev = own.dir_metadata()?.dev();
        Ok((Self { own: Arc::new(own), dev, _held: held }, Removal::of(abandoned)))
    }

    /// This server's folder.
    pub fn own(&self) -> Arc<Dir> {
        self.own.clone()
    }

    /// Where `folder`'s temporary files and deletions go: this server's folder when it is on the
    /// same file system (a rename cannot cross one), else `folder` itself.
    pub fn for_folder(&self, folder: &Dir) -> io::Result<Arc<Dir>> {
        use cap_std::fs::MetadataExt as _;
        if folder.dir_metadata()?.dev() == self.dev { Ok(self.own.clone()) } else { Ok(Arc::new(folder.try_clone()?)) }
    }
}

/// Takes the folder `path`'s exclusive lock if no one holds it (`Ok(Err(()))` if someone does).
fn lock(path: &Path) -> io::Result<Result<Flock<std::fs::File>, ()>> {
    let folder = std::fs::File::open(path)?;
    Ok(Flock::lock(folder, FlockArg::LockExclusiveNonblock).map_err(|_| ()))
}

/// `path`, made if missing, that only the server may enter.
fn make_private_dir(path: &Path) -> io::Result<Dir> {
    use std::os::unix::fs::DirBuilderExt as _;
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(error),
    }
    Dir::open_ambient_dir(path, ambient_authority())
}
