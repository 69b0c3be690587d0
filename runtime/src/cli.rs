//! The command line berth takes: runc's global flags, subcommands and their flag forms.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};


#[derive(Parser, Debug)]
#[command(
    name = "berth",
    about = "berth: a runc-compatible OCI runtime",
    long_about = "berth runs OCI bundles. It takes runc's commands and flags, so containerd's shim, \
CRI-O/conmon and podman drive it as they drive runc.\n\nState lives under --root (default /run/berth, \
or $XDG_RUNTIME_DIR/berth when not root).",
    disable_version_flag = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Args, Debug, Clone)]
pub struct GlobalOpts {
    /// Print the version in runc's format and exit
    #[arg(short = 'v', long, global = true)]
    pub version: bool,
    /// Directory for the containers' state
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Write logs and errors to this file instead of stderr
    #[arg(long, global = true, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Format of the log file
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log debug detail (to --log, or stderr)
    #[arg(long, global = true)]
    pub debug: bool,
    /// Use systemd to manage cgroups where the host supports it (cgroup v2 with systemd
    /// as init); on a cgroup v1 host cgroups are always managed through cgroupfs
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,
    /// Rootless mode ("true", "false" or "auto"): containers follow their spec's user
    /// namespace; with `spec`, writes a rootless config
    #[arg(long, global = true, value_name = "VALUE")]
    pub rootless: Option<String>,
    /// Path of the criu binary used by checkpoint and restore
    #[arg(long, global = true, value_name = "PATH")]
    pub criu: Option<PathBuf>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFormat {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a container from a bundle; its process waits for `start`
    Create(CreateArgs),
    /// Start the process of a created container
    Start(IdArg),
    /// Print a container's state as JSON
    State(IdArg),
    /// Send a signal (default SIGTERM) to a container's init process
    Kill(KillArgs),
    /// Delete a container and everything it holds
    Delete(DeleteArgs),
    /// Create and start a container; wait for it unless --detach
    Run(RunArgs),
    /// List containers
    List(ListArgs),
    /// Write a default config.json into a bundle directory
    Spec(SpecArgs),
}

#[derive(Args, Debug)]
pub struct IdArg {
    /// The container's id
    pub id: String,
}

#[derive(Args, Debug, Clone)]
pub struct CreateArgs {
    /// Bundle directory (holds config.json); default the current directory
    #[arg(short = 'b', long, value_name = "DIR", default_value = ".")]
    pub bundle: PathBuf,
    /// Unix socket that receives the pty master of a terminal container
    #[arg(long, value_name = "PATH")]
    pub console_socket: Option<PathBuf>,
    /// Write the init process's pid to this file
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
    /// Do not use pivot_root to enter the rootfs (for ramdisk roots)
    #[arg(long)]
    pub no_pivot: bool,
    /// Do not create a new session keyring
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Pass this many extra fds (from 3 on) to the container process
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub preserve_fds: i32,
    /// The container's id
    pub id: String,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub create: CreateArgs,
    /// Return once the container is started instead of waiting for it
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Keep the container's state after it exits (delete it with `berth delete`)
    #[arg(long)]
    pub keep: bool,
}

#[derive(Args, Debug)]
pub struct KillArgs {
    /// Send the signal to every process of the container
    #[arg(short = 'a', long)]
    pub all: bool,
    /// The container's id
    pub id: String,
    /// Signal name (TERM, SIGTERM) or number; default SIGTERM
    #[arg(default_value = "SIGTERM")]
    pub signal: String,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// Kill a running container first; succeed when it does not exist
    #[arg(short = 'f', long)]
    pub force: bool,
    /// The container's id
    pub id: String,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Output format
    #[arg(short = 'f', long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
    /// Print only the ids
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct SpecArgs {
    /// Bundle directory to write config.json into
    #[arg(short = 'b', long, value_name = "DIR", default_value = ".")]
    pub bundle: PathBuf,
}

/// Rewrites the argument forms runc takes that clap's parser does not: `--rootless` may
/// stand alone (meaning true) or take `true`, `false` or `auto` as the next argument.
pub fn normalize_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut args = args.into_iter().peekable();
    let mut out = Vec::new();
    while let Some(arg) = args.next() {
        if arg != "--rootless" {
            out.push(arg);
            continue;
        }
        let value = match args.peek().and_then(|next| next.to_str()) {
            Some(v @ ("true" | "false" | "auto")) => {
                let v = v.to_string();
                args.next();
                v
            }
            _ => "true".to_string(),
        };
        out.push(format!("--rootless={value}").into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::parse_from(normalize_args(args.iter().map(std::ffi::OsString::from)))
    }

    #[test]
    fn rootless_takes_a_value_in_either_form_or_none() {
        assert_eq!(parse(&["berth", "--rootless", "spec"]).global.rootless.as_deref(), Some("true"));
        let Some(Command::Spec(spec)) = parse(&["berth", "--rootless", "spec", "-b", "/x"]).command else { panic!("not spec") };
        assert_eq!(spec.bundle.to_str(), Some("/x"));
        assert_eq!(parse(&["berth", "--rootless", "false", "spec"]).global.rootless.as_deref(), Some("false"));
        assert_eq!(parse(&["berth", "--rootless=auto", "spec"]).global.rootless.as_deref(), Some("auto"));
    }

    #[test]
    fn runcs_flag_forms_parse() {
        let cli = parse(&["berth", "--root", "/r", "--log=/l", "--log-format", "json", "create", "-b", "/b", "--pid-file=/p", "id"]);
        assert_eq!(cli.global.root.as_deref(), Some(std::path::Path::new("/r")));
        assert_eq!(cli.global.log_format, LogFormat::Json);
        let Some(Command::Create(create)) = cli.command else { panic!("not create") };
        assert_eq!((create.bundle.to_str(), create.pid_file.unwrap().to_str(), create.id.as_str()), (Some("/b"), Some("/p"), "id"));
        let Some(Command::Kill(kill)) = parse(&["berth", "kill", "-a", "id"]).command else { panic!("not kill") };
        assert!(kill.all);
        assert_eq!(kill.signal, "SIGTERM");
    }
}
