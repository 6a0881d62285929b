//! The system calls a confined command may not make, as seccomp filters the helper installs on
//! itself once at its start: every command's init is its child and inherits them, as does all
//! the shell starts (the helper neither uses keyrings nor sets setuid bits, nor do the programs
//! it starts itself).
//!
//! Two filters, one per answer:
//! - `EPERM` for what would reach past the command: the kernel's keyrings (the user keyring is
//!   per uid, so it would be shared with every other command, and with the host's processes of
//!   that uid), and any mode with the setuid or setgid bit (a file the command makes must give
//!   nobody on the host a privilege when run; Flatpak refuses the same);
//! - `ENOSYS` for calls whose arguments a filter cannot see (`openat2`'s mode sits in a struct,
//!   `io_uring` runs calls outside seccomp's view): callers fall back to the plain calls.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

/// Both filters, in the order the init installs them.
pub struct Filters {
    pub refused: BpfProgram,
    pub absent: BpfProgram,
}

/// The x32 ABI's numbers are the same calls with this bit set; they pass the architecture check.
const X32: i64 = 0x4000_0000;

/// Builds the filters for this machine's architecture.
pub fn filters() -> Result<Filters, String> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| format!("seccomp on this machine: {e:?}"))?;
    let error = |e: seccompiler::BackendError| format!("building the seccomp filter: {e}");
    let mut refused: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for call in [libc::SYS_keyctl, libc::SYS_add_key, libc::SYS_request_key] {
        refused.insert(call, Vec::new());
    }
    // (call, index of its mode argument)
    let with_mode: [(i64, u8); 8] = [
        (libc::SYS_chmod, 1),
        (libc::SYS_fchmod, 1),
        (libc::SYS_fchmodat, 2),
        (libc::SYS_fchmodat2, 2),
        (libc::SYS_open, 2),
        (libc::SYS_openat, 3),
        (libc::SYS_creat, 1),
        (libc::SYS_mknodat, 2),
    ];
    for (call, arg) in with_mode.into_iter().chain([(libc::SYS_mknod, 1)]) {
        let mut rules = Vec::new();
        for bit in [libc::S_ISUID, libc::S_ISGID] {
            let bit = u64::from(bit);
            let condition =
                SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::MaskedEq(bit), bit).map_err(error)?;
            rules.push(SeccompRule::new(vec![condition]).map_err(error)?);
        }
        refused.insert(call, rules);
    }
    let x32: Vec<(i64, Vec<SeccompRule>)> = refused.iter().map(|(call, rules)| (call | X32, rules.clone())).collect();
    refused.extend(x32);
    let mut absent: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for call in [libc::SYS_openat2, libc::SYS_io_uring_setup, libc::SYS_io_uring_enter, libc::SYS_io_uring_register] {
        absent.insert(call, Vec::new());
        absent.insert(call | X32, Vec::new());
    }
    let program = |rules, errno: i32| -> Result<BpfProgram, String> {
        let filter =
            SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(errno as u32), arch).map_err(error)?;
        filter.try_into().map_err(error)
    };
    Ok(Filters { refused: program(refused, libc::EPERM)?, absent: program(absent, libc::ENOSYS)? })
}

/// Installs both filters on this process (the helper, which holds `CAP_SYS_ADMIN` in its user
/// namespace, so `no_new_privs` is not required of its children; each init sets it itself).
pub fn install(filters: &Filters) -> Result<(), String> {
    seccompiler::apply_filter(&filters.refused).map_err(|e| format!("installing the seccomp filter: {e}"))?;
    seccompiler::apply_filter(&filters.absent).map_err(|e| format!("installing the seccomp filter: {e}"))
}
