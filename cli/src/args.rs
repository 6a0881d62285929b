//! The command line: every subcommand and its options, as clap parses them.

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "rdev", version, about = "Run commands, terminals and file copies in rdev-api projects")]
pub struct Cli {
    /// The server, e.g. http://localhost:8080 (default: the one `rdev login` stored).
    #[arg(long, global = true, env = "RDEV_URL", value_name = "URL")]
    pub url: Option<String>,

    /// How listings are printed: a table for people, JSON for scripts.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Checks a key against a server and stores both (mode 0600) for the other commands.
    Login {
        /// The server's URL (default http://localhost:8080).
        url: Option<String>,
    },
    /// Forgets the stored server and key.
    Logout,
    /// Lists the projects the key may see.
    Projects,
    /// Lists commands, running and queued first.
    Ps(PsArgs),
    /// Runs a command in a project, its output streamed as it comes; exits with its exit code.
    Run(RunArgs),
    /// Prints a command's output; `-f` follows it to its end, resuming after a lost connection.
    Logs(LogsArgs),
    /// Cancels a queued or running command.
    Cancel {
        /// The command's id.
        id: String,
    },
    /// Opens an interactive terminal in a project.
    Shell { project: String },
    /// Copies files or folders between here and a project: one side is `PROJECT:PATH`.
    Cp(CpArgs),
    /// Lists the audit log, newest first.
    Audit(AuditArgs),
    /// Manages API keys (`keys:admin`).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manages sessions: a folder and variables kept from one command to the next.
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Prints a shell completion script, e.g. `rdev completions bash > ~/.local/share/bash-completion/completions/rdev`.
    Completions { shell: clap_complete::Shell },
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Only this project's commands.
    pub project: Option<String>,
    /// How many finished commands to show after the running and queued ones.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub limit: u32,
}

#[derive(Debug, Args)]
#[command(trailing_var_arg = true)]
pub struct RunArgs {
    pub project: String,
    /// The command: its words are joined with spaces and run by `/bin/sh -c`, as ssh does.
    #[arg(required = true, num_args = 1.., allow_hyphen_values = true)]
    pub command: Vec<String>,
    /// Queue it instead: print its id and return at once (follow it with `rdev logs -f ID`).
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Pass this process's stdin to the command (at most the server's stdin limit, 1 MiB by default).
    #[arg(long)]
    pub stdin: bool,
    /// Run it in this session (its folder and variables).
    #[arg(long, value_name = "ID")]
    pub session: Option<String>,
    /// Seconds before the server kills it.
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// A folder inside the project to start in.
    #[arg(long, short = 'w')]
    pub workdir: Option<String>,
    /// An extra variable, NAME=VALUE (repeatable).
    #[arg(long = "env", short = 'e', value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// The queue priority with `-d`, 0 to 9.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=9))]
    pub priority: Option<u8>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The command's id.
    pub id: String,
    /// Follow a running command to its end, then exit with its exit code.
    #[arg(short = 'f', long)]
    pub follow: bool,
}

#[derive(Debug, Args)]
pub struct CpArgs {
    /// What to copy: a local path, or PROJECT:PATH.
    pub source: String,
    /// Where to: a local path, or PROJECT:PATH (an existing folder receives it by name).
    pub destination: String,
    /// Replace a project's file only if its ETag is still this one.
    #[arg(long, value_name = "ETAG")]
    pub if_match: Option<String>,
    /// Replace project files even if they changed since rdev last copied them.
    #[arg(long, conflicts_with = "if_match")]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[arg(long)]
    pub project: Option<String>,
    /// succeeded, failed, timed_out, rejected, cancelled or error.
    #[arg(long)]
    pub outcome: Option<String>,
    /// Entries at or after this time (RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub limit: u32,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Lists keys.
    List,
    /// Creates a key and prints its secret (shown this once).
    Create {
        #[arg(long)]
        name: String,
        /// Comma-separated scopes, e.g. projects:read,commands:execute.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// When it stops working (RFC 3339).
        #[arg(long, value_name = "TIME")]
        expires_at: Option<String>,
    },
    /// Gives a key a new secret; the old one works `--grace` seconds more.
    Rotate {
        id: String,
        #[arg(long, value_name = "SECONDS")]
        grace: Option<u64>,
    },
    /// Revokes a key: everything it started ends.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// Lists your live sessions.
    List {
        #[arg(long)]
        project: Option<String>,
    },
    /// Creates a session in a project and prints its id.
    Create {
        project: String,
        /// A variable the session starts with, NAME=VALUE (repeatable).
        #[arg(long = "env", short = 'e', value_name = "NAME=VALUE")]
        env: Vec<String>,
        /// The folder it starts in.
        #[arg(long, short = 'w')]
        workdir: Option<String>,
    },
    /// Ends a session.
    Delete { id: String },
}
