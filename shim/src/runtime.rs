//! The container runtime the task service drives: the `Runtime` trait (one method per
//! runtime operation) and its one implementation, `BerthCli`, which calls the `berth`
//! binary through runc's command line (the only place an argv is built), with a timeout on
//! every call (output and exit watched through poll and a pidfd) and berth's own error
//! message taken from the JSON log.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::time::Instant;

use containerd_shim::api::Options;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{Message, MessageField};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use crate::error::ShimError;

/// Default state root of the containers this shim runs, per containerd namespace.
pub const DEFAULT_ROOT: &str = "/run/containerd/berth";

/// How long one runtime call may take before the shim kills it and fails the request.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The environment variable (whole seconds) that overrides the call timeout; the shim
/// inherits containerd's environment.
pub const CALL_TIMEOUT_ENV: &str = "BERTH_SHIM_CALL_TIMEOUT";

/// The type URL containerd gives runc's shim options.
const RUNC_OPTIONS_TYPE: &str = "containerd.runc.v1.Options";

fn call_timeout() -> Duration {
    std::env::var(CALL_TIMEOUT_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_CALL_TIMEOUT)
}

/// The runtime operations, named as on runc's command line; errors say which one failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Create,
    Start,
    Exec,
    Kill,
    Delete,
    Ps,
    Pause,
    Resume,
    Update,
    Events,
}

impl Command {
    /// The subcommand word on runc's command line.
    pub fn name(self) -> &'static str {
        match self {
            Command::Create => "create",
            Command::Start => "start",
            Command::Exec => "exec",
            Command::Kill => "kill",
            Command::Delete => "delete",
            Command::Ps => "ps",
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Update => "update",
            Command::Events => "events",
        }
    }
}

/// Where a created or exec'd process gets its stdio: handed over as it is, or a console
/// socket on which the runtime sends the pty master of a terminal.
pub enum ProcessStdio<'a> {
    Inherit(CallIo),
    Console(&'a Path),
}

/// A runc-compatible runtime, as the task service needs it.
pub trait Runtime {
    /// Creates container `id` from `bundle`; returns the init's pid (written to `pid_file`).
    fn create(&self, id: &str, bundle: &Path, pid_file: &Path, stdio: ProcessStdio) -> Result<i32, ShimError>;
    /// Starts the created container's init.
    fn start(&self, id: &str) -> Result<(), ShimError>;
    /// Starts the process described by the JSON file `process` in container `id`, detached;
    /// returns its pid (written to `pid_file`).
    fn exec(&self, id: &str, process: &Path, pid_file: &Path, stdio: ProcessStdio) -> Result<i32, ShimError>;
    /// Sends `signal` to the init, or to every process of the container with `all`.
    fn kill(&self, id: &str, signal: u32, all: bool) -> Result<(), ShimError>;
    /// Deletes the container, killing it first if it still runs.
    fn delete(&self, id: &str) -> Result<(), ShimError>;
    /// The pids of the container's processes.
    fn ps(&self, id: &str) -> Result<Vec<u32>, ShimError>;
    fn pause(&self, id: &str) -> Result<(), ShimError>;
    fn resume(&self, id: &str) -> Result<(), ShimError>;
    /// Applies the OCI `linux.resources` JSON in the file `resources`.
    fn update(&self, id: &str, resources: &Path) -> Result<(), ShimError>;
    /// The container's resource usage: the `data` of runc's `events --stats` event.
    fn stats(&self, id: &str) -> Result<serde_json::Value, ShimError>;
}

/// The `berth` binary, where its state lives and where it logs (from containerd's runc
/// options and the bundle).
#[derive(Debug, Clone)]
pub struct BerthCli {
    pub binary: PathBuf,
    pub root: PathBuf,
    pub systemd_cgroup: bool,
    /// berth's JSON log, `<bundle>/log.json` as containerd's runc shim has it.
    pub log: PathBuf,
}

/// The stdio a runtime call hands to berth (and, for create and exec, to the process).
pub struct CallIo {
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
}

impl CallIo {
    pub fn null() -> CallIo {
        CallIo { stdin: Stdio::null(), stdout: Stdio::null(), stderr: Stdio::null() }
    }
}

impl BerthCli {
    /// berth next to this shim binary, else `berth` on PATH; root per namespace.
    pub fn new(binary_name: &str, root: &str, namespace: &str, systemd_cgroup: bool, bundle: &Path) -> BerthCli {
        let binary = if !binary_name.is_empty() {
            PathBuf::from(binary_name)
        } else {
            std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(|dir| dir.join("berth")))
                .filter(|path| path.exists())
                .unwrap_or_else(|| PathBuf::from("berth"))
        };
        let root = if root.is_empty() { Path::new(DEFAULT_ROOT).join(namespace) } else { PathBuf::from(root) };
        BerthCli { binary, root, systemd_cgroup, log: bundle.join("log.json") }
    }

    /// From containerd's runc options (BinaryName, Root, SystemdCgroup) when their type is
    /// runc's; other options are not ours to read.
    pub fn from_options(options: &MessageField<Any>, namespace: &str, bundle: &Path) -> BerthCli {
        let parsed = options
            .as_ref()
            .filter(|any| any.type_url.ends_with(RUNC_OPTIONS_TYPE))
            .and_then(|any| Options::parse_from_bytes(&any.value).ok());
        match parsed {
            Some(o) => BerthCli::new(&o.binary_name, &o.root, namespace, o.systemd_cgroup, bundle),
            None => BerthCli::new("", "", namespace, false, bundle),
        }
    }

    /// `--pid-file P [--console-socket S]`, and the stdio the call hands over.
    fn process_args(pid_file: &Path, stdio: ProcessStdio) -> (Vec<String>, CallIo) {
        let mut args = vec!["--pid-file".to_string(), pid_file.display().to_string()];
        let io = match stdio {
            ProcessStdio::Inherit(io) => io,
            ProcessStdio::Console(socket) => {
                args.extend(["--console-socket".to_string(), socket.display().to_string()]);
                CallIo::null()
            }
        };
        (args, io)
    }

    /// Runs `berth --root R [--systemd-cgroup] --log LOG --log-format json COMMAND ARGS`;
    /// returns stdout when stdout is not handed over in `io`. Failures carry berth's own
    /// message.
    fn call(&self, command: Command, args: &[&str], io: Option<CallIo>) -> Result<String, ShimError> {
        let failed = |message: String| ShimError::Runtime { command, message };
        let mut process = std::process::Command::new(&self.binary);
        process.arg("--root").arg(&self.root);
        if self.systemd_cgroup {
            process.arg("--systemd-cgroup");
        }
        process.arg("--log").arg(&self.log).args(["--log-format", "json"]).arg(command.name()).args(args);
        let captured = io.is_none();
        let io = io.unwrap_or(CallIo { stdin: Stdio::null(), stdout: Stdio::piped(), stderr: Stdio::piped() });
        process.stdin(io.stdin).stdout(io.stdout).stderr(io.stderr);
        crate::server::unblock_signals_in_child(&mut process);
        let mut child = process.spawn().map_err(|e| failed(format!("cannot run {}: {e}", self.binary.display())))?;
        let pid = child.id() as i32;
        let timeout = call_timeout();
        let deadline = Instant::now() + timeout;
        let timed_out = || {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
            failed(format!("berth {} timed out after {}s", command.name(), timeout.as_secs()))
        };
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        if captured {
            let outputs = [child.stdout.take().map(OwnedFd::from), child.stderr.take().map(OwnedFd::from)];
            if !drain(outputs, [&mut stdout, &mut stderr], deadline) {
                return Err(timed_out());
            }
        }
        let code = wait_exit(pid, deadline).ok_or_else(timed_out)?;
        if code == 0 {
            return Ok(String::from_utf8_lossy(&stdout).into_owned());
        }
        Err(failed(last_error(&self.log).unwrap_or_else(|| {
            let said = String::from_utf8_lossy(&stderr).trim().to_string();
            if said.is_empty() {
                format!("berth {} failed with exit code {code}", command.name())
            } else {
                said
            }
        })))
    }
}

impl Runtime for BerthCli {
    fn create(&self, id: &str, bundle: &Path, pid_file: &Path, stdio: ProcessStdio) -> Result<i32, ShimError> {
        let bundle = bundle.display().to_string();
        let (process_args, io) = BerthCli::process_args(pid_file, stdio);
        let mut args = vec!["--bundle", bundle.as_str()];
        args.extend(process_args.iter().map(String::as_str));
        args.push(id);
        self.call(Command::Create, &args, Some(io))?;
        read_pid(Command::Create, pid_file)
    }

    fn start(&self, id: &str) -> Result<(), ShimError> {
        self.call(Command::Start, &[id], None).map(drop)
    }

    fn exec(&self, id: &str, process: &Path, pid_file: &Path, stdio: ProcessStdio) -> Result<i32, ShimError> {
        let process = process.display().to_string();
        let (process_args, io) = BerthCli::process_args(pid_file, stdio);
        let mut args = vec!["--process", process.as_str(), "--detach"];
        args.extend(process_args.iter().map(String::as_str));
        args.push(id);
        self.call(Command::Exec, &args, Some(io))?;
        read_pid(Command::Exec, pid_file)
    }

    fn kill(&self, id: &str, signal: u32, all: bool) -> Result<(), ShimError> {
        let signal = signal.to_string();
        let mut args = Vec::new();
        if all {
            args.push("--all");
        }
        args.extend([id, signal.as_str()]);
        self.call(Command::Kill, &args, None).map(drop)
    }

    fn delete(&self, id: &str) -> Result<(), ShimError> {
        self.call(Command::Delete, &["--force", id], None).map(drop)
    }

    fn ps(&self, id: &str) -> Result<Vec<u32>, ShimError> {
        let out = self.call(Command::Ps, &["--format", "json", id], None)?;
        serde_json::from_str(&out).map_err(|e| ShimError::Runtime {
            command: Command::Ps,
            message: format!("berth ps printed no pid list: {e}"),
        })
    }

    fn pause(&self, id: &str) -> Result<(), ShimError> {
        self.call(Command::Pause, &[id], None).map(drop)
    }

    fn resume(&self, id: &str) -> Result<(), ShimError> {
        self.call(Command::Resume, &[id], None).map(drop)
    }

    fn update(&self, id: &str, resources: &Path) -> Result<(), ShimError> {
        self.call(Command::Update, &["--resources", &resources.display().to_string(), id], None).map(drop)
    }

    fn stats(&self, id: &str) -> Result<serde_json::Value, ShimError> {
        let out = self.call(Command::Events, &["--stats", id], None)?;
        let mut event: serde_json::Value = serde_json::from_str(out.trim()).map_err(|e| ShimError::Runtime {
            command: Command::Events,
            message: format!("berth events printed no stats: {e}"),
        })?;
        Ok(event["data"].take())
    }
}

/// The pid berth wrote to `pid_file` for a create or exec.
fn read_pid(command: Command, pid_file: &Path) -> Result<i32, ShimError> {
    std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .ok_or_else(|| ShimError::Runtime { command, message: format!("berth wrote no pid to {}", pid_file.display()) })
}

/// Reads both pipes to EOF, or gives up (false) at the deadline.
fn drain(pipes: [Option<OwnedFd>; 2], into: [&mut Vec<u8>; 2], deadline: Instant) -> bool {
    let mut open: Vec<(File, &mut Vec<u8>)> =
        pipes.into_iter().zip(into).filter_map(|(p, buf)| p.map(|fd| (File::from(fd), buf))).collect();
    while !open.is_empty() {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else { return false };
        let mut fds: Vec<PollFd> = open.iter().map(|(f, _)| PollFd::new(f.as_fd(), PollFlags::POLLIN)).collect();
        let timeout = PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return true,
        }
        let ready: Vec<bool> = fds.iter().map(|fd| fd.revents().is_some_and(|r| !r.is_empty())).collect();
        drop(fds);
        let mut index = 0;
        open.retain_mut(|(file, buf)| {
            let this = index;
            index += 1;
            if !ready[this] {
                return true;
            }
            let mut chunk = [0u8; 8192];
            match file.read(&mut chunk) {
                Ok(0) | Err(_) => false,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    true
                }
            }
        });
    }
    true
}

/// Waits for `pid` (this shim's child) until the deadline and returns its exit code
/// (128+signal when killed); the shim's own reaper never takes it, as the serving loop
/// reaps only between calls.
pub fn wait_exit(pid: i32, deadline: Instant) -> Option<i32> {
    // SAFETY: pidfd_open returns a new descriptor or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if raw >= 0 {
        // SAFETY: the descriptor is new and owned here.
        let pidfd = unsafe { OwnedFd::from_raw_fd(raw) };
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
            let timeout =
                PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX);
            match poll(&mut fds, timeout) {
                Ok(0) => return None,
                Ok(_) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
    }
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return Some(code),
            Ok(WaitStatus::Signaled(_, signal, _)) => return Some(128 + signal as i32),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return Some(255),
        }
    }
}

/// The message of the last error line berth wrote to its JSON log.
pub fn last_error(log: &Path) -> Option<String> {
    let mut text = String::new();
    File::open(log).ok()?.read_to_string(&mut text).ok()?;
    text.lines().rev().find_map(|line| {
        let entry: serde_json::Value = serde_json::from_str(line).ok()?;
        (entry["level"] == "error").then(|| entry["msg"].as_str().map(String::from)).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(type_url: &str) -> MessageField<Any> {
        let runc = Options {
            binary_name: "/opt/runc-like".into(),
            root: "/run/custom".into(),
            systemd_cgroup: true,
            ..Default::default()
        };
        Some(Any { type_url: type_url.into(), value: runc.write_to_bytes().unwrap(), ..Default::default() }).into()
    }

    #[test]
    fn runc_options_are_honoured_only_under_runcs_type() {
        let bundle = Path::new("/run/bundle");
        let honoured = BerthCli::from_options(&options("containerd.runc.v1.Options"), "ns", bundle);
        assert_eq!(
            (honoured.binary.to_str(), honoured.root.to_str(), honoured.systemd_cgroup),
            (Some("/opt/runc-like"), Some("/run/custom"), true)
        );
        let ignored = BerthCli::from_options(&options("io.containerd.other.v1.Options"), "ns", bundle);
        assert_eq!((ignored.root.to_str(), ignored.systemd_cgroup), (Some("/run/containerd/berth/ns"), false));
        assert_ne!(ignored.binary.to_str(), Some("/opt/runc-like"));
    }
}
