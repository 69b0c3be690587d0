//! Waiting for a foreground process (`run`, `exec`): block signals from the start so none
//! is lost, reap children, forward signals to it, and turn its end into an exit code (its
//! own, or 128+signal).

use anyhow::{Context, Result};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// The signals a foreground berth blocks and forwards, as the kernel's 64-bit mask (bit
/// N-1 for signal N): all but 32 and 33, which glibc and musl keep for their threads
/// (cancellation, set*id). The C library's own full set would also leave out 34 under
/// musl, where it is internal too, though callers mean it as SIGRTMIN (as Docker and runc
/// number it); berth's main thread makes none of the calls that use it there.
const FORWARDED: u64 = !((1 << 31) | (1 << 32));

/// Blocks every signal, first thing in a foreground `run` or `exec`: one sent while the
/// container is being set up stays pending and is forwarded once its process exists,
/// instead of killing berth half-way (leaving the container behind, its process
/// unsignalled). The mask survives berth's re-execution from its sealed copy; processes
/// berth starts inherit it and unblock it themselves (`unblock_all` before the
/// container's exec; hooks run through std's `Command`, which resets the mask).
pub fn block_all() -> Result<()> {
    set_signal_mask(libc::SIG_BLOCK, FORWARDED).map(drop).context("cannot block signals to forward them")
}

/// Unblocks every signal in a process about to exec the container's program, which must
/// not start with berth's blocked mask; a signal pending here is delivered at once.
pub fn unblock_all() -> std::io::Result<()> {
    set_signal_mask(libc::SIG_SETMASK, 0).map(drop)
}

/// Changes the calling thread's signal mask through the kernel's own call (the C library's
/// leaves out the signals it reserves) and returns the mask it had.
fn set_signal_mask(how: libc::c_int, mask: u64) -> std::io::Result<u64> {
    let mut before: u64 = 0;
    let size = std::mem::size_of::<u64>();
    // SAFETY: rt_sigprocmask reads one 64-bit mask and writes the old one to `before`.
    let done = unsafe { libc::syscall(libc::SYS_rt_sigprocmask, how, &mask, &mut before, size) };
    if done == 0 {
        Ok(before)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Waits for one of the signals `block_all` blocked and returns its number (real-time
/// ones included).
fn next_signal() -> Result<i32> {
    let size = std::mem::size_of::<u64>();
    loop {
        // SAFETY: rt_sigtimedwait reads one 64-bit mask; no siginfo or timeout is passed.
        let signal = unsafe {
            libc::syscall(
                libc::SYS_rt_sigtimedwait,
                &FORWARDED,
                std::ptr::null_mut::<libc::siginfo_t>(),
                std::ptr::null::<libc::timespec>(),
                size,
            )
        };
        if signal > 0 {
            return Ok(signal as i32);
        }
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EINTR) {
            return Err(error).context("cannot wait for signals");
        }
    }
}

/// Reaps children until `process` exits, forwarding every other signal `block_all`
/// blocked to it; a window size change calls `on_resize` instead.
pub fn wait_forwarding(process: Pid, on_resize: impl Fn()) -> Result<i32> {
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
        match next_signal()? {
            libc::SIGWINCH => on_resize(),
            libc::SIGCHLD | libc::SIGURG => {}
            signal => {
                // The process may be gone already; its exit arrives as SIGCHLD.
                // SAFETY: kill(2) with a pid and a signal number.
                unsafe { libc::kill(process.as_raw(), signal) };
            }
        }
    }
}
