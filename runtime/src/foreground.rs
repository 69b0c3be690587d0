//! Waiting for a foreground process (`run`, `exec`): block signals from the start so none
//! is lost, reap children, forward signals to it, and turn its end into an exit code (its
//! own, or 128+signal).

use anyhow::{Context, Result};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Blocks every signal, first thing in a foreground `run` or `exec`: one sent while the
/// container is being set up stays pending and is forwarded once its process exists,
/// instead of killing berth half-way (leaving the container behind, its process
/// unsignalled). The mask survives berth's re-execution from its sealed copy; processes
/// berth starts inherit it and unblock it themselves (`unblock_all` before the
/// container's exec; hooks run through std's `Command`, which resets the mask).
pub fn block_all() -> Result<SigSet> {
    let signals = SigSet::all();
    signals.thread_block().context("cannot block signals to forward them")?;
    Ok(signals)
}

/// Unblocks every signal in a process about to exec the container's program, which must
/// not start with berth's blocked mask; a signal pending here is delivered at once.
pub fn unblock_all() -> nix::Result<()> {
    SigSet::empty().thread_set_mask()
}

/// Reaps children until `process` exits, forwarding every other signal in `signals` (which
/// the caller has blocked) to it; a window size change calls `on_resize` instead.
pub fn wait_forwarding(process: Pid, signals: &SigSet, on_resize: impl Fn()) -> Result<i32> {
    loop {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == process => return Ok(code),
                Ok(WaitStatus::Signaled(pid, signal, _)) if pid == process => return Ok(128 + signal as i32),
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) => continue,
                // No child left: `process` was reaped elsewhere or is not ours; waiting for
                // a signal now would never end.
                Err(nix::errno::Errno::ECHILD) => {
                    anyhow::bail!("container process {process} is not a child of berth; cannot wait for it")
                }
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
