//! The argv of a pod exec. User input never becomes shell text: a fixed script changes into the
//! workdir (`$1`) and then `exec env NAME=value… /bin/sh -c <command>` with every piece passed as
//! its own argument, so quotes, `$(…)` or `;` in a workdir or a variable are just bytes.
//!
//! stdin: an API server that speaks only `v4.channel.k8s.io` cannot half-close stdin (kube-rs
//! closes the whole stream instead), so the command must not wait for the stream's end: with
//! stdin, `$2` is its length and the command reads it through `head -c N`, whose EOF comes after
//! exactly those bytes whatever the protocol. Without, `$2` is `-` and stdin is not attached.
//!
//! A session's command runs inside `session_shell::SCRIPT`, its state record written to
//! `record` in the container (there is no fourth stream to carry it).

pub(super) use crate::adapters::session_shell::{WORKDIR_MISSING, WORKDIR_MISSING_EXIT};
use crate::{adapters::session_shell, domain::CommandSpec};

const SCRIPT: &str = r#"cd -- "$1" 2>/dev/null || { echo "rdev: workdir does not exist in the container" >&2; exit 200; }; rdev_stdin=$2; shift 2; case $rdev_stdin in -) exec env "$@" ;; *) head -c "$rdev_stdin" | env "$@" ;; esac"#;

/// The argv of `spec`; `record` is where a session's command leaves its state.
pub(super) fn argv(spec: &CommandSpec, record: Option<&str>) -> Vec<String> {
    let mut argv = vec!["/bin/sh".to_owned(), "-c".to_owned(), SCRIPT.to_owned(), "rdev-exec".to_owned()];
    // A session's command goes to its workdir itself, so it knows the project root.
    let (workdir, session) = match record.filter(|_| spec.keep_state) {
        Some(record) => (None, Some(record)),
        None => (spec.workdir.clone(), None),
    };
    argv.push(workdir.unwrap_or_else(|| ".".to_owned()));
    argv.push(spec.stdin.as_ref().map_or_else(|| "-".to_owned(), |stdin| stdin.len().to_string()));
    argv.extend(spec.env.iter().map(|(name, value)| format!("{name}={value}")));
    match session {
        Some(record) => argv.extend(session_shell::argv(record, spec.workdir.as_deref(), &spec.command)),
        None => argv.extend(["/bin/sh".to_owned(), "-c".to_owned(), spec.command.clone()]),
    }
    argv
}

/// Reads a session command's record and removes it.
pub(super) fn take_record_argv(record: &str) -> Vec<String> {
    ["/bin/sh", "-c", r#"cat -- "$1" && rm -f -- "$1""#, "rdev-state", record].map(str::to_owned).to_vec()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn spec(command: &str, workdir: Option<&str>, env: &[(&str, &str)]) -> CommandSpec {
        CommandSpec {
            command: command.into(),
            timeout: Duration::from_secs(5),
            workdir: workdir.map(Into::into),
            env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            max_output_bytes: 1024,
            stdin: None,
            keep_state: false,
        }
    }

    #[test]
    fn user_input_stays_out_of_the_script() {
        let hostile = "'; rm -rf / #$(reboot)";
        let argv = argv(&spec("echo \"$X\"", Some(hostile), &[("X", hostile)]), None);
        assert_eq!(argv[2], SCRIPT, "the script is constant");
        assert!(SCRIPT.contains(WORKDIR_MISSING) && SCRIPT.contains(&format!("exit {WORKDIR_MISSING_EXIT}")));
        assert_eq!(argv[4], hostile);
        assert_eq!(argv[5], "-");
        assert_eq!(argv[6], format!("X={hostile}"));
        assert_eq!(&argv[7..], ["/bin/sh", "-c", "echo \"$X\""]);
    }

    /// Runs the argv with a real /bin/sh, as the container would.
    #[test]
    fn runs_in_the_workdir_with_the_variables() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("it's here")).unwrap();
        let argv = argv(&spec("pwd; printf '%s' \"$X\"", Some("it's here"), &[("X", "a $(b) 'c'")]), None);
        let out = std::process::Command::new(&argv[0]).args(&argv[1..]).current_dir(dir.path()).output().unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(stdout.ends_with("/it's here\na $(b) 'c'"), "{stdout}");

        let missing = argv_for_missing();
        let out = std::process::Command::new(&missing[0]).args(&missing[1..]).current_dir(dir.path()).output().unwrap();
        assert_eq!(out.status.code(), Some(WORKDIR_MISSING_EXIT));
        assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), WORKDIR_MISSING);
    }

    fn argv_for_missing() -> Vec<String> {
        argv(&spec("true", Some("nope"), &[]), None)
    }

    /// stdin of N bytes ends after N bytes even though the stream stays open (v4).
    #[test]
    fn stdin_ends_after_its_length_while_the_stream_stays_open() {
        use std::io::{Read, Write};
        let mut with_stdin = spec("wc -c; cat", None, &[]);
        with_stdin.stdin = Some(bytes::Bytes::from_static(b"hello"));
        let argv = argv(&with_stdin, None);
        let mut child = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"hello and more that never ends").unwrap();
        let mut out = String::new();
        child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        assert_eq!(out.trim(), "5");
        assert!(child.wait().unwrap().success());
        drop(stdin);
    }
}
