//! Calls to the `berth` binary: runc's command line, with a timeout on every call (output
//! and exit watched through poll and a pidfd), and berth's own error message taken from the
//! JSON log.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::time::Instant;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

/// Default state root of the containers this shim runs, per containerd namespace.
pub const DEFAULT_ROOT: &str = "/run/containerd/berth";

/// How long one runtime call may take before the shim kills it and fails the request.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The environment variable (whole seconds) that overrides the call timeout; the shim
/// inherits containerd's environment.
pub const CALL_TIMEOUT_ENV: &str = "BERTH_SHIM_CALL_TIMEOUT";

fn call_timeout() -> Duration {
    std::env::var(CALL_TIMEOUT_ENV).ok().and_then(|v| v.parse().ok()).map(Duration::from_secs).unwrap_or(DEFAULT_CALL_TIMEOUT)
}

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
        let timeout = call_timeout();
        let deadline = Instant::now() + timeout;
        let timed_out = || {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
            format!("berth {} timed out after {}s", args.first().unwrap_or(&""), timeout.as_secs())
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
        Err(last_error(log).unwrap_or_else(|| {
            let said = String::from_utf8_lossy(&stderr).trim().to_string();
            if said.is_empty() { format!("berth {} failed with exit code {code}", args.first().unwrap_or(&"")) } else { said }
        }))
    }
}

/// Reads both pipes to EOF, or gives up (false) at the deadline.
fn drain(pipes: [Option<OwnedFd>; 2], into: [&mut Vec<u8>; 2], deadline: Instant) -> bool {
    let mut open: Vec<(File, &mut Vec<u8>)> = pipes.into_iter().zip(into).filter_map(|(p, buf)| p.map(|fd| (File::from(fd), buf))).collect();
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
            let timeout = PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX);
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
