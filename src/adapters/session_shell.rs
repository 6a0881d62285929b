//! The wrapper a session's command runs in, on either executor: a constant script that starts
//! the command in the session's folder and, when the shell exits (at the end, or by `exit`),
//! writes its state record (`ShellState::parse` reads it) to fd 9, never to stdout or stderr.
//!
//! Fd 9 is where the record channel was put at start: fd 3 moved there (local: a pipe the server
//! reads), or a fresh file (Kubernetes, which has no fourth stream; read by a second exec).
//! User input never becomes script text: the workdir and the command are arguments, and the
//! command runs by `eval` so that `cd` and `export` act on the very shell that reports them.
//! Output cannot forge a record: it goes to other descriptors. A command that deliberately
//! writes to fd 9 can only claim a state it could have set itself, and the server checks it as
//! it checks any: folder inside the project, names and sizes of the variables.

/// Exit status the wrappers use when `cd` fails; with `WORKDIR_MISSING` on stderr it means the
/// workdir does not exist where the command runs.
pub(crate) const WORKDIR_MISSING_EXIT: i32 = 200;
pub(crate) const WORKDIR_MISSING: &str = "rdev: workdir does not exist in the container";

/// `$1`: `-` (the record channel is fd 3) or the file to write it to (where none can be made,
/// the command still runs and reports nothing); `$2`: the workdir, `$3`:
/// the command. The start environment is the shell's own (`/proc/$$/environ`), the final one
/// what a child inherits (`/proc/self/environ` of `cat`): exactly the exported variables.
pub(crate) const SCRIPT: &str = r#"case $1 in -) exec 9>&3 3>&- ;; *) if (umask 077; : >"$1") 2>/dev/null; then exec 9>"$1"; else exec 9>/dev/null; fi ;; esac
cd -P . && rdev_root=$PWD
cd -- "$2" 2>/dev/null || { echo "rdev: workdir does not exist in the container" >&2; exit 200; }
rdev_command=$3
shift 3
rdev_save() {
  rdev_status=$?
  trap - EXIT
  if cd -P . 2>/dev/null; then
    { printf '%s\0%s\0' "$rdev_root" "$PWD"; cat /proc/$$/environ; printf '\0'; cat /proc/self/environ; } >&9 2>/dev/null
  fi
  exit "$rdev_status"
}
trap rdev_save EXIT
eval "$rdev_command""#;

/// The argv of a session's command: `record` is `-` (fd 3) or a file.
pub(crate) fn argv(record: &str, workdir: Option<&str>, command: &str) -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        SCRIPT.into(),
        "rdev-session".into(),
        record.into(),
        workdir.unwrap_or(".").into(),
        command.into(),
    ]
}

#[cfg(test)]
mod tests {
    use std::{io::Read, os::fd::AsRawFd, process::Command};

    use super::*;
    use crate::domain::{SessionState, ShellState};

    /// Runs the script with a real /bin/sh, fd 3 a pipe, as the local executor does.
    fn run(dir: &std::path::Path, workdir: Option<&str>, command: &str) -> (i32, String, Vec<u8>) {
        let (mut read, write) = std::io::pipe().unwrap();
        let argv = argv("-", workdir, command);
        let mut child = Command::new(&argv[0]);
        child.args(&argv[1..]).current_dir(dir).env_clear().env("PATH", "/usr/bin:/bin").env("GONE", "x");
        let raw = write.as_raw_fd();
        // SAFETY: dup2 in the child before exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut child, move || {
                if libc::dup2(raw, 3) < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
            });
        }
        let output = child.output().unwrap();
        drop(write);
        let mut record = Vec::new();
        read.read_to_end(&mut record).unwrap();
        (output.status.code().unwrap(), String::from_utf8(output.stdout).unwrap(), record)
    }

    #[test]
    fn reports_folder_and_variables_off_stdout_even_after_exit() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub dir")).unwrap();
        let (code, stdout, record) =
            run(dir.path(), None, "cd 'sub dir' && export FOO='a b' && unset GONE; echo out; exit 3");
        assert_eq!((code, stdout.as_str()), (3, "out\n"));
        let shell = ShellState::parse(&record).expect("a record");
        let next = SessionState::default().after(&shell);
        assert_eq!(next.workdir.as_deref(), Some("sub dir"));
        assert_eq!(next.env.get("FOO").map(String::as_str), Some("a b"));
    }

    #[test]
    fn a_record_printed_to_stdout_is_only_output() {
        let dir = tempfile::tempdir().unwrap();
        let forged = r"printf '/\0/etc\0\0FOO=forged\0'";
        let (_, stdout, record) = run(dir.path(), None, forged);
        assert!(stdout.contains("FOO=forged"));
        let next = SessionState::default().after(&ShellState::parse(&record).unwrap());
        assert_eq!(next, SessionState::default());
    }

    #[test]
    fn a_missing_workdir_is_reported_as_the_kube_script_does() {
        let dir = tempfile::tempdir().unwrap();
        let (code, _, record) = run(dir.path(), Some("nope"), "true");
        assert_eq!(code, WORKDIR_MISSING_EXIT);
        assert!(record.is_empty());
        assert!(SCRIPT.contains(WORKDIR_MISSING));
    }
}
