//! Waiting for a foreground process (`run`, `exec`): reap children, forward signals to it,
//! and turn its end into an exit code (its own, or 128+signal).

use anyhow::{Context, Result};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Reaps children until `process` exits, forwarding every other signal in `signals` (which
/// the caller has blocked) to it; a window size change calls `on_resize` instead.
pub fn wait_forwarding(process: Pid, signals: &SigSet, on_resize: impl Fn()) -> Result<i32> {
    loop {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == process => return Ok(code),
                Ok(WaitStatus::Signaled(pid, signal, _)) if pid == process => return Ok(128 + signal as i32),
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => break,
                Ok(_) => continue,
                Err(e) => return Err(e).context("cannot wait for the container process"),
            }
        }
        match signals.wait().context("cannot wait for signals")? {
            Signal::SIGWINCH => on_resize(),
            Signal::SIGCHLD | Signal::SIGURG => {}
            signal => {
                // The process may be gone already; its exit arrives as SIGCHLD.
                let _ = kill(process, signal);
            }
        }
    }
}
