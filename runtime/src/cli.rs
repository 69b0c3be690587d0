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

/// Flags before the command, as runc takes them (not after it: giving every command a copy
/// of them cost more than the rest of a short command's parsing).
#[derive(Args, Debug, Clone)]
pub struct GlobalOpts {
    /// Print the version in runc's format and exit
    #[arg(short = 'v', long)]
    pub version: bool,
    /// Directory for the containers' state
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Write logs and errors to this file instead of stderr
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Format of the log file
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log debug detail (to --log, or stderr)
    #[arg(long)]
    pub debug: bool,
    /// Use systemd to manage cgroups where the host supports it (cgroup v2 with systemd
    /// as init); on a cgroup v1 host cgroups are always managed through cgroupfs
    #[arg(long)]
    pub systemd_cgroup: bool,
    /// Rootless mode ("true", "false" or "auto"): containers follow their spec's user
    /// namespace; with `spec`, writes a rootless config
    #[arg(long, value_name = "VALUE")]
    pub rootless: Option<String>,
    /// Path of the criu binary used by checkpoint and restore
    #[arg(long, value_name = "PATH")]
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

/// Each command's flags are built only when that command runs (`defer`): building all of
/// them took most of a short command's instructions.
#[derive(Subcommand, Debug)]
#[command(defer = true)]
pub enum Command {
    /// Create a container from a bundle; its process waits for `start`
    Create(CreateArgs),
    /// Start the process of a created container
    Start(IdArg),
    /// Print a container's state as JSON
    State(IdArg),
    /// Send a signal (default SIGTERM) to a container's init process
    Kill(KillArgs),
    /// Stop a container (berth's own, not a runc command): its stop signal, SIGKILL after the grace period
    Stop(StopArgs),
    /// Delete a container and everything it holds
    Delete(DeleteArgs),
    /// Create and start a container; wait for it unless --detach
    Run(RunArgs),
    /// List containers
    List(ListArgs),
    /// Write a default config.json into a bundle directory
    Spec(SpecArgs),
    /// Run a new process inside a running container
    Exec(ExecArgs),
    /// List the processes of a container
    Ps(PsArgs),
    /// Freeze every process of a container
    Pause(IdArg),
    /// Thaw a paused container
    Resume(IdArg),
    /// Change a running container's resource limits
    Update(UpdateArgs),
    /// Print a container's resource usage, once (--stats) or every --interval
    Events(EventsArgs),
    /// Print the runtime-spec features document of this runtime
    Features,
    /// Checkpoint a running container with CRIU
    Checkpoint(CheckpointArgs),
    /// Restore a container from a CRIU checkpoint
    Restore(RestoreArgs),
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
    /// Keep the caller's session keyring instead of giving the container its own
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
pub struct StopArgs {
    /// Seconds to wait after the stop signal before SIGKILL (negative: wait for ever);
    /// default the config's `berth.stop-timeout` annotation, else 10
    #[arg(short = 't', long = "time", value_name = "SECS", allow_negative_numbers = true)]
    pub time: Option<i64>,
    /// The container's id
    pub id: String,
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
pub struct ExecArgs {
    /// A runtime-spec process JSON file describing the process (instead of flags)
    #[arg(short = 'p', long, value_name = "FILE")]
    pub process: Option<PathBuf>,
    /// Unix socket that receives the pty master when --tty is set
    #[arg(long, value_name = "PATH")]
    pub console_socket: Option<PathBuf>,
    /// Working directory inside the container
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,
    /// Set an environment variable (NAME=VALUE); repeatable
    #[arg(short = 'e', long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Allocate a pseudo-terminal
    #[arg(short = 't', long)]
    pub tty: bool,
    /// User to run as: UID[:GID]
    #[arg(short = 'u', long, value_name = "UID[:GID]")]
    pub user: Option<String>,
    /// Additional group id; repeatable
    #[arg(short = 'g', long = "additional-gids", value_name = "GID")]
    pub additional_gids: Vec<u32>,
    /// SELinux process label
    #[arg(long, value_name = "LABEL")]
    pub process_label: Option<String>,
    /// AppArmor profile
    #[arg(long, value_name = "PROFILE")]
    pub apparmor: Option<String>,
    /// Set no_new_privileges for the process
    #[arg(long)]
    pub no_new_privs: bool,
    /// Add a capability (CAP_NAME); repeatable
    #[arg(short = 'c', long = "cap", value_name = "CAP")]
    pub cap: Vec<String>,
    /// Return once the process has started
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Write the process's pid to this file
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
    /// Pass this many extra fds (from 3 on) to the process
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub preserve_fds: i32,
    /// Run even when the container is paused
    #[arg(long)]
    pub ignore_paused: bool,
    /// Sub-cgroup to run the process in
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<String>,
    /// The container's id
    pub id: String,
    /// The command and its arguments (when no --process is given)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PsArgs {
    /// Output format: a ps table, or a JSON array of pids
    #[arg(short = 'f', long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
    /// The container's id
    pub id: String,
    /// Arguments for ps(1) (default -ef)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

#[derive(Args, Debug, Default)]
pub struct UpdateArgs {
    /// A runtime-spec LinuxResources JSON file, or - for stdin
    #[arg(short = 'r', long, value_name = "FILE")]
    pub resources: Option<PathBuf>,
    /// Block IO weight (10-1000)
    #[arg(long)]
    pub blkio_weight: Option<u16>,
    /// CPU CFS period in microseconds
    #[arg(long)]
    pub cpu_period: Option<u64>,
    /// CPU CFS quota in microseconds
    #[arg(long)]
    pub cpu_quota: Option<i64>,
    /// CPU realtime period in microseconds
    #[arg(long)]
    pub cpu_rt_period: Option<u64>,
    /// CPU realtime runtime in microseconds
    #[arg(long)]
    pub cpu_rt_runtime: Option<i64>,
    /// CPU shares (relative weight)
    #[arg(long)]
    pub cpu_share: Option<u64>,
    /// CPUs to use (0-3, 0,1)
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes to use (0-3, 0,1)
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    /// Kernel memory limit (deprecated in the kernel; bytes or 64m)
    #[arg(long, value_parser = parse_size)]
    pub kernel_memory: Option<i64>,
    /// Kernel TCP buffer memory limit (bytes or 64m)
    #[arg(long, value_parser = parse_size)]
    pub kernel_memory_tcp: Option<i64>,
    /// Memory limit (bytes or 64m, 1g; -1 for none)
    #[arg(long, value_parser = parse_size)]
    pub memory: Option<i64>,
    /// Memory soft limit (bytes or 64m)
    #[arg(long, value_parser = parse_size)]
    pub memory_reservation: Option<i64>,
    /// Memory plus swap limit (bytes or 64m; -1 for none)
    #[arg(long, value_parser = parse_size)]
    pub memory_swap: Option<i64>,
    /// Maximum number of processes (-1 for none)
    #[arg(long, allow_negative_numbers = true)]
    pub pids_limit: Option<i64>,
    /// Intel RDT L3 cache schema
    #[arg(long)]
    pub l3_cache_schema: Option<String>,
    /// Intel RDT memory bandwidth schema
    #[arg(long)]
    pub mem_bw_schema: Option<String>,
    /// The container's id
    pub id: String,
}

/// A byte size as runc takes it: a number with an optional k, m, g or t suffix (powers of
/// 1024, an optional trailing b), or -1 for no limit.
pub fn parse_size(text: &str) -> Result<i64, String> {
    let lower = text.trim().to_ascii_lowercase();
    if lower == "-1" {
        return Ok(-1);
    }
    let digits_end = lower.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(lower.len());
    let (number, unit) = lower.split_at(digits_end);
    let number: f64 =
        number.parse().map_err(|_| format!("invalid size {text:?}: use bytes or a number with k, m, g or t"))?;
    let multiplier: f64 = match unit.trim_end_matches('b').trim_end_matches('i') {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(format!("invalid size {text:?}: unknown unit {unit:?}")),
    };
    Ok((number * multiplier) as i64)
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Print the statistics once and exit
    #[arg(long)]
    pub stats: bool,
    /// Time between statistics (5s, 500ms, 1m)
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub interval: std::time::Duration,
    /// The container's id
    pub id: String,
}

/// A duration as Go writes them: 5s, 500ms, 1m, 1h, or a combination (1m30s).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let mut total = std::time::Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let (number, tail) = rest.split_at(number_end);
        let value: f64 =
            number.parse().map_err(|_| format!("invalid duration {text:?}: use forms like 5s, 500ms, 1m"))?;
        let unit_end = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_end);
        let seconds = match unit {
            "ns" => value / 1e9,
            "us" | "µs" => value / 1e6,
            "ms" => value / 1e3,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            _ => return Err(format!("invalid duration {text:?}: unknown unit {unit:?}")),
        };
        total += std::time::Duration::from_secs_f64(seconds);
        rest = next;
    }
    if total.is_zero() {
        return Err(format!("invalid duration {text:?}: must be above zero"));
    }
    Ok(total)
}

/// CRIU options shared by checkpoint and restore.
#[derive(Args, Debug)]
pub struct CriuOpts {
    /// Directory for the checkpoint images
    #[arg(long, value_name = "DIR", default_value = "checkpoint")]
    pub image_path: PathBuf,
    /// Directory for CRIU's work files and logs
    #[arg(long, value_name = "DIR")]
    pub work_path: Option<PathBuf>,
    /// Allow open TCP connections
    #[arg(long)]
    pub tcp_established: bool,
    /// Allow external unix sockets
    #[arg(long)]
    pub ext_unix_sk: bool,
    /// Allow shell jobs
    #[arg(long)]
    pub shell_job: bool,
    /// Handle file locks
    #[arg(long)]
    pub file_locks: bool,
}

#[derive(Args, Debug)]
pub struct CheckpointArgs {
    #[command(flatten)]
    pub criu: CriuOpts,
    /// Keep the container running after the checkpoint
    #[arg(long)]
    pub leave_running: bool,
    /// The container's id
    pub id: String,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub criu: CriuOpts,
    /// Bundle directory of the restored container
    #[arg(short = 'b', long, value_name = "DIR", default_value = ".")]
    pub bundle: PathBuf,
    /// Return once restored
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Write the restored init's pid to this file
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master
    #[arg(long, value_name = "PATH")]
    pub console_socket: Option<PathBuf>,
    /// The container's id
    pub id: String,
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
        let Some(Command::Spec(spec)) = parse(&["berth", "--rootless", "spec", "-b", "/x"]).command else {
            panic!("not spec")
        };
        assert_eq!(spec.bundle.to_str(), Some("/x"));
        assert_eq!(parse(&["berth", "--rootless", "false", "spec"]).global.rootless.as_deref(), Some("false"));
        assert_eq!(parse(&["berth", "--rootless=auto", "spec"]).global.rootless.as_deref(), Some("auto"));
    }

    #[test]
    fn sizes_and_durations_parse_as_runc_takes_them() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("64m"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512kb"), Ok(512 << 10));
        assert_eq!(parse_size("-1"), Ok(-1));
        assert!(parse_size("lots").is_err());
        assert_eq!(parse_duration("5s"), Ok(std::time::Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(std::time::Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(std::time::Duration::from_secs(90)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn exec_takes_flags_then_the_command() {
        let Some(Command::Exec(exec)) =
            parse(&["berth", "exec", "-e", "A=1", "--env=B=2", "-u", "1000:1000", "-t", "id", "sh", "-c", "echo -n x"])
                .command
        else {
            panic!("not exec")
        };
        assert_eq!(exec.env, ["A=1", "B=2"]);
        assert_eq!(exec.user.as_deref(), Some("1000:1000"));
        assert!(exec.tty);
        assert_eq!(exec.id, "id");
        assert_eq!(exec.command, ["sh", "-c", "echo -n x"]);
    }

    #[test]
    fn runcs_flag_forms_parse() {
        let cli = parse(&[
            "berth",
            "--root",
            "/r",
            "--log=/l",
            "--log-format",
            "json",
            "create",
            "-b",
            "/b",
            "--pid-file=/p",
            "id",
        ]);
        assert_eq!(cli.global.root.as_deref(), Some(std::path::Path::new("/r")));
        assert_eq!(cli.global.log_format, LogFormat::Json);
        let Some(Command::Create(create)) = cli.command else { panic!("not create") };
        assert_eq!(
            (create.bundle.to_str(), create.pid_file.unwrap().to_str(), create.id.as_str()),
            (Some("/b"), Some("/p"), "id")
        );
        let Some(Command::Kill(kill)) = parse(&["berth", "kill", "-a", "id"]).command else { panic!("not kill") };
        assert!(kill.all);
        assert_eq!(kill.signal, "SIGTERM");
    }

    #[test]
    fn stop_takes_docker_time_flag_forms() {
        for args in [&["berth", "stop", "-t", "3", "web"][..], &["berth", "stop", "--time=3", "web"]] {
            let Some(Command::Stop(stop)) = parse(args).command else { panic!("not stop") };
            assert_eq!((stop.time, stop.id.as_str()), (Some(3), "web"));
        }
        let Some(Command::Stop(stop)) = parse(&["berth", "stop", "-t", "-1", "web"]).command else {
            panic!("not stop")
        };
        assert_eq!(stop.time, Some(-1));
        let Some(Command::Stop(stop)) = parse(&["berth", "stop", "web"]).command else { panic!("not stop") };
        assert_eq!(stop.time, None);
    }
}
