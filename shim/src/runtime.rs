//! Calls to the `berth` binary: runc's command line, with a timeout on every call, waiting
//! through the shim crate's exit monitor (its reaper owns every child), and berth's own
//! error message taken from the JSON log.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use containerd_shim::monitor::{ExitEvent, Subject, Topic};
use containerd_shim::synchronous::monitor::monitor_subscribe;

/// Default state root of the containers this shim runs, per containerd namespace.
pub const DEFAULT_ROOT: &str = "/run/containerd/berth";

/// How long one runtime call may take before the shim gives up on it.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The runtime binary and where its state lives (from containerd's runc options).
#[derive(Debug, Clone)]
pub struct Runtime {
    pub binary: PathBuf,
    pub root: PathBuf,
    pub systemd_cgroup: bool,
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

impl Runtime {
    /// berth next to this shim binary, else `berth` on PATH; root per namespace.
    pub fn new(binary_name: &str, root: &str, namespace: &str, systemd_cgroup: bool) -> Runtime {
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
        Runtime { binary, root, systemd_cgroup }
    }

    /// Runs `berth --root R [--systemd-cgroup] --log LOG --log-format json ARGS`; returns
    /// stdout when stdout is not handed over in `io`. Failures carry berth's own message.
    pub fn call(&self, log: &Path, args: &[&str], io: Option<CallIo>) -> Result<String, String> {
        let exits = monitor_subscribe(Topic::Pid).map_err(|e| format!("cannot watch runtime calls: {e}"))?;
        let mut command = Command::new(&self.binary);
        command.arg("--root").arg(&self.root);
        if self.systemd_cgroup {
            command.arg("--systemd-cgroup");
        }
        command.arg("--log").arg(log).args(["--log-format", "json"]).args(args);
        let captured = io.is_none();
        let io = io.unwrap_or(CallIo { stdin: Stdio::null(), stdout: Stdio::piped(), stderr: Stdio::piped() });
        command.stdin(io.stdin).stdout(io.stdout).stderr(io.stderr);
        let mut child = command.spawn().map_err(|e| format!("cannot run {}: {e}", self.binary.display()))?;
        let pid = child.id() as i32;
        // Read output on this thread before waiting: pipes close when berth exits.
        let (mut stdout, mut stderr) = (String::new(), String::new());
        if captured {
            if let Some(mut out) = child.stdout.take() {
                let _ = out.read_to_string(&mut stdout);
            }
            if let Some(mut err) = child.stderr.take() {
                let _ = err.read_to_string(&mut stderr);
            }
        }
        let code = wait_exit(&exits, pid, CALL_TIMEOUT).ok_or_else(|| {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
            format!("berth {} timed out after {}s", args.first().unwrap_or(&""), CALL_TIMEOUT.as_secs())
        })?;
        if code == 0 {
            return Ok(stdout);
        }
        Err(last_error(log).unwrap_or_else(|| {
            let said = stderr.trim();
            if said.is_empty() { format!("berth {} failed with exit code {code}", args.first().unwrap_or(&"")) } else { said.to_string() }
        }))
    }
}

/// Waits for `pid`'s exit code as the shim's reaper reports it.
pub fn wait_exit(exits: &containerd_shim::synchronous::monitor::Subscription, pid: i32, timeout: Duration) -> Option<i32> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.checked_duration_since(std::time::Instant::now())?;
        match exits.rx.recv_timeout(left) {
            Ok(ExitEvent { subject: Subject::Pid(exited), exit_code }) if exited == pid => return Some(exit_code),
            Ok(_) => continue,
            Err(_) => return None,
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
