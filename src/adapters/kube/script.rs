//! The argv of a pod exec. User input never becomes shell text: a fixed script changes into the
//! workdir (`$1`) and then `exec env NAME=value… /bin/sh -c <command>` with every piece passed as
//! its own argument, so quotes, `$(…)` or `;` in a workdir or a variable are just bytes.

use crate::domain::CommandSpec;

/// Exit status the script uses when `cd` fails; with `WORKDIR_MISSING` on stderr it means the
/// workdir does not exist in the container.
pub(super) const WORKDIR_MISSING_EXIT: i32 = 200;
pub(super) const WORKDIR_MISSING: &str = "rdev: workdir does not exist in the container";

const SCRIPT: &str = r#"cd -- "$1" 2>/dev/null || { echo "rdev: workdir does not exist in the container" >&2; exit 200; }; shift; exec env "$@""#;

pub(super) fn argv(spec: &CommandSpec) -> Vec<String> {
    let mut argv = vec!["/bin/sh".to_owned(), "-c".to_owned(), SCRIPT.to_owned(), "rdev-exec".to_owned()];
    argv.push(spec.workdir.clone().unwrap_or_else(|| ".".to_owned()));
    argv.extend(spec.env.iter().map(|(name, value)| format!("{name}={value}")));
    argv.extend(["/bin/sh".to_owned(), "-c".to_owned(), spec.command.clone()]);
    argv
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
        }
    }

    #[test]
    fn user_input_stays_out_of_the_script() {
        let hostile = "'; rm -rf / #$(reboot)";
        let argv = argv(&spec("echo \"$X\"", Some(hostile), &[("X", hostile)]));
        assert_eq!(argv[2], SCRIPT, "the script is constant");
        assert!(SCRIPT.contains(WORKDIR_MISSING) && SCRIPT.contains(&format!("exit {WORKDIR_MISSING_EXIT}")));
        assert_eq!(argv[4], hostile);
        assert_eq!(argv[5], format!("X={hostile}"));
        assert_eq!(&argv[6..], ["/bin/sh", "-c", "echo \"$X\""]);
    }

    /// Runs the argv with a real /bin/sh, as the container would.
    #[test]
    fn runs_in_the_workdir_with_the_variables() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("it's here")).unwrap();
        let argv = argv(&spec("pwd; printf '%s' \"$X\"", Some("it's here"), &[("X", "a $(b) 'c'")]));
        let out = std::process::Command::new(&argv[0]).args(&argv[1..]).current_dir(dir.path()).output().unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(stdout.ends_with("/it's here\na $(b) 'c'"), "{stdout}");

        let missing = argv_for_missing();
        let out = std::process::Command::new(&missing[0]).args(&missing[1..]).current_dir(dir.path()).output().unwrap();
        assert_eq!(out.status.code(), Some(WORKDIR_MISSING_EXIT));
        assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), WORKDIR_MISSING);
    }

    fn argv_for_missing() -> Vec<String> {
        argv(&spec("true", Some("nope"), &[]))
    }
}
