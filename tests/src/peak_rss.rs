//! Peak resident memory of one program's own process, not of its children: the program
//! runs under ptrace, and its kernel high-water mark (VmHWM) is read when it exits and
//! before each exec it makes (an exec starts a new address space with a new mark).

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus};

/// `ptrace_syscall_info.op` of a stop at a system call's entry.
const SYSCALL_INFO_ENTRY: u8 = 1;

/// Runs `command` to its end under ptrace; returns its peak resident set in KiB (the
/// highest of its address spaces) and its exit status. Its children are not traced.
pub fn run(command: &mut Command) -> (u64, ExitStatus) {
    // SAFETY: the closure runs in the forked child before exec and only makes one system call.
    unsafe {
        command.pre_exec(|| {
            if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // Reaped by `wait` below (std's `wait` cannot see ptrace stops).
    #[allow(clippy::zombie_processes)]
    let child = command.spawn().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let pid = child.id() as libc::pid_t;
    // The first stop is the SIGTRAP after its exec.
    let mut status = wait(pid);
    assert!(libc::WIFSTOPPED(status), "{command:?} did not stop after its exec under ptrace");
    let options =
        libc::PTRACE_O_TRACESYSGOOD | libc::PTRACE_O_TRACEEXIT | libc::PTRACE_O_TRACEEXEC | libc::PTRACE_O_EXITKILL;
    // SAFETY: plain ptrace requests on a stopped child this process traces.
    let set = unsafe { libc::ptrace(libc::PTRACE_SETOPTIONS, pid, 0, options as libc::c_long) };
    assert_eq!(set, 0, "cannot set ptrace options on {command:?}: {}", std::io::Error::last_os_error());
    let mut peak = 0;
    let mut pending_signal = 0;
    loop {
        // SAFETY: as above; the child is in a ptrace stop.
        unsafe { libc::ptrace(libc::PTRACE_SYSCALL, pid, 0, pending_signal as libc::c_long) };
        pending_signal = 0;
        status = wait(pid);
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            break;
        }
        let signal = libc::WSTOPSIG(status);
        let event = status >> 16;
        if signal == libc::SIGTRAP | 0x80 {
            if entering_exec(pid) {
                peak = peak.max(high_water_mark(pid));
            }
        } else if event == libc::PTRACE_EVENT_EXIT {
            peak = peak.max(high_water_mark(pid));
        } else if event == 0 {
            // A signal on its way to the program: deliver it.
            pending_signal = signal;
        }
    }
    (peak, ExitStatus::from_raw(status))
}

fn wait(pid: libc::pid_t) -> libc::c_int {
    let mut status = 0;
    // SAFETY: waits for this process's own child into a local.
    let waited = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
    assert_eq!(waited, pid, "cannot wait for traced process {pid}: {}", std::io::Error::last_os_error());
    status
}

/// Whether the traced process stopped at the entry of execve or execveat.
fn entering_exec(pid: libc::pid_t) -> bool {
    // struct ptrace_syscall_info: op (u8), arch, instruction and stack pointers, then at
    // byte 24 the system call's number when op is an entry.
    let mut info = [0u64; 11];
    // SAFETY: the kernel writes at most the given size into `info`.
    let written =
        unsafe { libc::ptrace(libc::PTRACE_GET_SYSCALL_INFO, pid, std::mem::size_of_val(&info), info.as_mut_ptr()) };
    written > 0
        && (info[0] & 0xff) as u8 == SYSCALL_INFO_ENTRY
        && [libc::SYS_execve, libc::SYS_execveat].contains(&(info[3] as libc::c_long))
}

/// VmHWM of a live process, in KiB.
fn high_water_mark(pid: libc::pid_t) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_before_an_exec_counts() {
        // 64 MiB touched, then an exec of a small program: the peak is the first image's.
        let (peak, status) = run(Command::new("python3")
            .args(["-c", "import os; block = b'x' * (64 << 20); os.execv('/bin/true', ['true'])"]));
        assert!(status.success(), "{status}");
        assert!(peak >= 64 << 10, "peak {peak} KiB misses the 64 MiB held before the exec");
    }
}
