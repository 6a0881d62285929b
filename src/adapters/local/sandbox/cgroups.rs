//! Per-command limits (memory with tmpfs pages, processes, CPU) from cgroups: a pool of
//! cgroups under the helper's own, made once and reused; each command's init moves itself into
//! one (through descriptors the helper opened) before it starts anything.
//!
//! cgroup v2 where the helper's cgroup delegates `memory` and `pids` to its children; else v1
//! where the `memory` and `pids` hierarchies are mounted and writable (the `cpu` one too when a
//! CPU limit is set). After a command, the cgroup's counters say whether a limit stopped it.

use std::{
    fs::File,
    io::Write as _,
    path::{Path, PathBuf},
};

use super::protocol::Limits;

/// The CFS period the CPU quota is a share of, in microseconds.
const CPU_PERIOD_US: u64 = 100_000;
/// Prefix of the pool's folder, followed by the helper's pid.
const POOL_PREFIX: &str = "rdev-sandbox-";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// Where each controller's pool lives.
pub struct Pool {
    version: Version,
    /// v1: the memory, pids and (with a CPU limit) cpu pools; v2: the one pool.
    parents: Vec<(Controller, PathBuf)>,
    limits: Limits,
    free: Vec<Slot>,
    made: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Controller {
    Memory,
    Pids,
    Cpu,
    /// v2: all of them in one folder.
    All,
}

/// One command's cgroup (one folder per v1 hierarchy), its files opened once.
pub struct Slot {
    procs: Vec<File>,
    /// `memory.oom_control` (v1) or `memory.events` (v2), counting OOM kills.
    oom_events: Option<File>,
    /// `pids.events`, counting refused forks.
    pid_events: Option<File>,
    oom_kills: u64,
    refused_forks: u64,
}

impl Pool {
    /// Finds the helper's cgroup and makes the pool's folder below it (removing those of
    /// helpers that are gone). `Err` says what this host lacks.
    pub fn open(limits: &Limits) -> Result<Self, String> {
        let own =
            std::fs::read_to_string("/proc/self/cgroup").map_err(|e| format!("reading /proc/self/cgroup: {e}"))?;
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
        let v2 = v2_home(&own, &mounts).filter(|dir| delegates(dir, limits));
        let (version, homes) = match v2 {
            Some(dir) => (Version::V2, vec![(Controller::All, dir)]),
            None => {
                let mut wanted = vec![(Controller::Memory, "memory"), (Controller::Pids, "pids")];
                if limits.cpu_millis.is_some() {
                    wanted.push((Controller::Cpu, "cpu"));
                }
                let mut homes = Vec::new();
                for (controller, name) in wanted {
                    let dir = v1_home(&own, &mounts, name).ok_or_else(|| {
                        format!(
                            "no cgroup v2 delegating memory and pids to this process, and no cgroup v1 `{name}` \
                             hierarchy mounted"
                        )
                    })?;
                    homes.push((controller, dir));
                }
                (Version::V1, homes)
            }
        };
        let name = format!("{POOL_PREFIX}{}", std::process::id());
        let mut parents = Vec::new();
        for (controller, home) in homes {
            sweep(&home);
            let parent = home.join(&name);
            std::fs::create_dir(&parent).map_err(|e| {
                format!(
                    "cannot create a cgroup in {} ({e}); give this user that folder, or set RDEV_SANDBOX_LIMITS=off",
                    home.display()
                )
            })?;
            if version == Version::V2 {
                let mut enable = "+memory +pids".to_owned();
                if limits.cpu_millis.is_some() {
                    enable.push_str(" +cpu");
                }
                write(&parent.join("cgroup.subtree_control"), &enable)?;
            }
            parents.push((controller, parent));
        }
        Ok(Self { version, parents, limits: limits.clone(), free: Vec::new(), made: 0 })
    }

    /// "cgroup v1" or "cgroup v2", for the helper's report.
    pub fn describe(&self) -> &'static str {
        match self.version {
            Version::V1 => "cgroup v1",
            Version::V2 => "cgroup v2",
        }
    }

    /// A cgroup for the next command: a free one, or a new one.
    pub fn take(&mut self) -> Result<Slot, String> {
        if let Some(slot) = self.free.pop() {
            return Ok(slot);
        }
        self.made += 1;
        let mut slot = Slot { procs: Vec::new(), oom_events: None, pid_events: None, oom_kills: 0, refused_forks: 0 };
        for (controller, parent) in &self.parents {
            let dir = parent.join(self.made.to_string());
            std::fs::create_dir(&dir).map_err(|e| format!("creating the cgroup {}: {e}", dir.display()))?;
            self.set_limits(*controller, &dir)?;
            let procs = File::options()
                .write(true)
                .open(dir.join("cgroup.procs"))
                .map_err(|e| format!("opening {}/cgroup.procs: {e}", dir.display()))?;
            slot.procs.push(procs);
            let open = |name: &str| File::open(dir.join(name)).ok();
            match controller {
                Controller::Memory => slot.oom_events = open("memory.oom_control"),
                Controller::Pids => slot.pid_events = open("pids.events"),
                Controller::All => (slot.oom_events, slot.pid_events) = (open("memory.events"), open("pids.events")),
                Controller::Cpu => {}
            }
        }
        (slot.oom_kills, slot.refused_forks) = slot.counters();
        Ok(slot)
    }

    fn set_limits(&self, controller: Controller, dir: &Path) -> Result<(), String> {
        let memory = self.limits.memory_bytes.to_string();
        let pids = self.limits.pids.to_string();
        let quota = self.limits.cpu_millis.map(|millis| (millis * CPU_PERIOD_US / 1000).max(1000));
        match (self.version, controller) {
            (Version::V1, Controller::Memory) => {
                write(&dir.join("memory.limit_in_bytes"), &memory)?;
                // With swap accounting the limit covers swap too, so a command cannot swap past it.
                let swap = dir.join("memory.memsw.limit_in_bytes");
                if swap.exists() {
                    write(&swap, &memory)?;
                }
            }
            (Version::V1, Controller::Pids) => write(&dir.join("pids.max"), &pids)?,
            (Version::V1, Controller::Cpu) => {
                if let Some(quota) = quota {
                    write(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                    write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
            }
            (_, _) => {
                write(&dir.join("memory.max"), &memory)?;
                let _ = write(&dir.join("memory.swap.max"), "0");
                write(&dir.join("pids.max"), &pids)?;
                if let Some(quota) = quota {
                    write(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
                }
            }
        }
        Ok(())
    }

    /// Takes back a command's cgroup (all its processes are gone) and says which limit, if
    /// any, stopped the command.
    pub fn give_back(&mut self, mut slot: Slot) -> Option<String> {
        let (oom_kills, refused_forks) = slot.counters();
        let reached = if oom_kills > slot.oom_kills {
            Some(format!(
                "the command reached its memory limit ({}, RDEV_SANDBOX_MEMORY) and was killed",
                size(self.limits.memory_bytes)
            ))
        } else if refused_forks > slot.refused_forks {
            Some(format!(
                "the command reached its process limit ({}, RDEV_SANDBOX_PIDS): starting more processes failed",
                self.limits.pids
            ))
        } else {
            None
        };
        (slot.oom_kills, slot.refused_forks) = (oom_kills, refused_forks);
        self.free.push(slot);
        reached
    }
}

impl Slot {
    /// Moves the calling process (a command's init, before it starts anything) into this cgroup.
    pub fn attach_self(&self) -> Result<(), String> {
        for mut procs in &self.procs {
            procs.write_all(b"0").map_err(|e| format!("moving the command into its cgroup: {e}"))?;
        }
        Ok(())
    }

    /// The OOM kills and refused forks counted so far.
    fn counters(&self) -> (u64, u64) {
        (counter(self.oom_events.as_ref(), "oom_kill"), counter(self.pid_events.as_ref(), "max"))
    }
}

/// A size as people write it: `256 MiB`, `4 GiB`, or bytes.
pub fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b => format!("{b} bytes"),
    }
}

/// The value of `key` in a flat keyed cgroup file (`key value` lines), read from its start
/// (the file stays open: no path walk per command); 0 when absent.
fn counter(file: Option<&File>, key: &str) -> u64 {
    let mut buf = [0u8; 512];
    let Some(n) = file.and_then(|f| std::os::unix::fs::FileExt::read_at(f, &mut buf, 0).ok()) else { return 0 };
    std::str::from_utf8(&buf[..n])
        .ok()
        .and_then(|text| text.lines().find_map(|line| line.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok()))
        .unwrap_or(0)
}

fn write(file: &Path, value: &str) -> Result<(), String> {
    std::fs::write(file, value).map_err(|e| format!("writing {value:?} to {}: {e}", file.display()))
}

/// Mounts of one type: (the mount's root within its hierarchy, where it is mounted, super options).
fn mounts_of<'a>(mountinfo: &'a str, fstype: &'a str) -> impl Iterator<Item = (&'a str, &'a str, &'a str)> + 'a {
    mountinfo.lines().filter_map(move |line| {
        let (before, after) = line.split_once(" - ")?;
        let fields: Vec<&str> = before.split(' ').collect();
        let mut rest = after.split(' ');
        (rest.next()? == fstype).then_some(())?;
        let _source = rest.next()?;
        Some((*fields.get(3)?, *fields.get(4)?, rest.next().unwrap_or("")))
    })
}

/// The folder of the helper's cgroup in hierarchy `mount_point` (mounted from `mount_root`).
fn join_cgroup(mount_point: &str, mount_root: &str, own: &str) -> Option<PathBuf> {
    let relative = Path::new(own).strip_prefix(mount_root).ok()?;
    Some(Path::new(mount_point).join(relative))
}

fn v2_home(own: &str, mountinfo: &str) -> Option<PathBuf> {
    let path = own.lines().find_map(|line| line.strip_prefix("0::"))?;
    let (root, point, _) = mounts_of(mountinfo, "cgroup2").next()?;
    join_cgroup(point, root, path)
}

/// Whether a v2 cgroup lets its children have the controllers the limits need.
fn delegates(dir: &Path, limits: &Limits) -> bool {
    let Ok(enabled) = std::fs::read_to_string(dir.join("cgroup.subtree_control")) else { return false };
    let enabled: Vec<&str> = enabled.split_whitespace().collect();
    let needed: &[&str] = if limits.cpu_millis.is_some() { &["memory", "pids", "cpu"] } else { &["memory", "pids"] };
    needed.iter().all(|c| enabled.contains(c))
}

fn v1_home(own: &str, mountinfo: &str, controller: &str) -> Option<PathBuf> {
    let path = own.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers.split(',').any(|c| c == controller).then_some(path)
    })?;
    let (root, point, _) =
        mounts_of(mountinfo, "cgroup").find(|(_, _, options)| options.split(',').any(|o| o == controller))?;
    join_cgroup(point, root, path)
}

/// Removes the pools of helpers that are no longer running (best effort: a cgroup with
/// processes in it cannot be removed, and stays).
fn sweep(home: &Path) {
    let Ok(entries) = std::fs::read_dir(home) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(POOL_PREFIX)) else { continue };
        if pid.parse::<u32>().is_err() || Path::new("/proc").join(pid).exists() {
            continue;
        }
        if let Ok(children) = std::fs::read_dir(entry.path()) {
            children.flatten().filter(|c| c.path().is_dir()).for_each(|c| drop(std::fs::remove_dir(c.path())));
        }
        let _ = std::fs::remove_dir(entry.path());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
30 25 0:26 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
31 25 0:27 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
32 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
33 25 0:29 /inner /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";

    #[test]
    fn the_helpers_cgroup_is_found_in_each_hierarchy() {
        let own = "4:memory:/jobs/a\n8:pids:/\n2:cpu,cpuacct:/x\n0::/inner/service";
        assert_eq!(v1_home(own, MOUNTINFO, "memory").unwrap(), Path::new("/sys/fs/cgroup/memory/jobs/a"));
        assert_eq!(v1_home(own, MOUNTINFO, "pids").unwrap(), Path::new("/sys/fs/cgroup/pids"));
        assert_eq!(v1_home(own, MOUNTINFO, "cpu").unwrap(), Path::new("/sys/fs/cgroup/cpu,cpuacct/x"));
        assert_eq!(v2_home(own, MOUNTINFO).unwrap(), Path::new("/sys/fs/cgroup/unified/service"));
        assert!(v1_home(own, MOUNTINFO, "blkio").is_none());
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(
            (size(256 << 20), size(4 << 30), size(1000)),
            ("256 MiB".into(), "4 GiB".into(), "1000 bytes".into())
        );
    }

    #[test]
    fn counters_are_read_from_keyed_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory.oom_control");
        std::fs::write(&path, "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n").unwrap();
        let file = File::open(&path).unwrap();
        assert_eq!(counter(Some(&file), "oom_kill"), 3);
        assert_eq!(counter(Some(&file), "oom_kill"), 3, "read again from the start");
        assert_eq!(counter(Some(&file), "missing"), 0);
    }
}
