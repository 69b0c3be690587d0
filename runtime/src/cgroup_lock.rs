//! Starts the kernel's wait for the cgroup migration lock early, so `create`, `run` and
//! `exec` do not wait for all of it in series. The new process joins the container's
//! cgroups by a `cgroup.procs` write (libcontainer's intermediate process makes it), which
//! takes a global lock; when no such write happened in the last RCU grace period, the
//! writer first waits a whole grace period (3-15 ms measured here, more than the rest of an
//! exec), and writers that come while that wait is under way, or within a grace period
//! after it, wait only for what is left of it. A thread started first thing makes that
//! first, harmless write (berth's pid into the cgroup berth is already in) while berth sets
//! the container up.

use std::ffi::CString;
use std::sync::OnceLock;

/// The file and the text the warm-up thread writes: made before it starts, and never freed.
static WRITE: OnceLock<(CString, String)> = OnceLock::new();

/// Starts a thread that rewrites berth's pid into berth's own cgroup (which moves
/// nothing) and ends. Best effort: without a writable cgroup file (rootless) it changes
/// nothing. The wait it starts ends with the grace period the new process's own write
/// waits for, so the thread is gone before berth is done.
pub fn warm_up() {
    let pid = std::process::id().to_string();
    // Inside a container without a cgroup namespace, /proc/self/cgroup's path may name
    // another cgroup of the hierarchy berth sees: write only to one that lists berth.
    let Some(procs) = own_cgroup_procs()
        .filter(|path| std::fs::read_to_string(path).is_ok_and(|listed| listed.lines().any(|line| line == pid)))
        .and_then(|path| CString::new(path).ok())
    else {
        return;
    };
    let (path, pid) = WRITE.get_or_init(|| (procs, pid));
    // SAFETY: both outlive the thread (they are never freed).
    unsafe { bare_thread::open_and_write(path, pid.as_bytes()) };
}

/// The warm-up thread, made with a bare clone(2) and running three system calls only.
/// libcontainer copies berth by clone(2) while the thread may run, and the copy has only
/// the cloning thread: had the warm-up thread held the memory allocator's lock at that
/// moment (a `std::thread` takes it as it starts and ends), the copy's first allocation
/// would wait forever. This thread never touches the allocator, the C library or
/// thread-local storage; its stack is a static buffer, and it starts with every signal
/// blocked, so no handler ever runs on it.
#[cfg(target_arch = "x86_64")]
mod bare_thread {
    use std::ffi::CStr;

    const SYS_WRITE: usize = libc::SYS_write as usize;
    const SYS_CLOSE: usize = libc::SYS_close as usize;
    const SYS_CLONE: usize = libc::SYS_clone as usize;
    const SYS_EXIT: usize = libc::SYS_exit as usize;
    const SYS_OPENAT: usize = libc::SYS_openat as usize;
    const AT_FDCWD: isize = libc::AT_FDCWD as isize;
    const O_WRONLY_CLOEXEC: usize = (libc::O_WRONLY | libc::O_CLOEXEC) as usize;
    const THREAD_FLAGS: usize = (libc::CLONE_VM
        | libc::CLONE_FS
        | libc::CLONE_FILES
        | libc::CLONE_SIGHAND
        | libc::CLONE_THREAD
        | libc::CLONE_SYSVSEM) as usize;

    /// The thread's stack (16-byte aligned): it pushes nothing, but a stack it must have.
    static mut STACK: [u128; 16] = [0; 16];

    /// Writes `text` to the file at `path` on a thread of its own; returns at once.
    ///
    /// # Safety
    /// `path` and `text` must stay valid until the process ends; one call per process (the
    /// stack is shared).
    pub unsafe fn open_and_write(path: &CStr, text: &[u8]) {
        // Every signal, those the C library keeps for itself included, blocked around the
        // clone: the thread starts with the mask of the thread that made it.
        let Ok(before) = crate::foreground::set_signal_mask(libc::SIG_SETMASK, u64::MAX) else { return };
        let stack_top = (&raw mut STACK).cast::<u8>().add(std::mem::size_of::<[u128; 16]>());
        // The child starts after `syscall` on the new stack with the parent's registers but
        // rax (0): it opens, writes, closes and exits (the thread only, not the process).
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov rax, {openat}",
            "mov rdi, {at_fdcwd}",
            "mov rsi, r12",
            "mov rdx, {flags}",
            "syscall",
            "test rax, rax",
            "js 3f",
            "mov r12, rax",
            "mov rdi, rax",
            "mov rsi, r13",
            "mov rdx, r14",
            "mov rax, {write}",
            "syscall",
            "mov rdi, r12",
            "mov rax, {close}",
            "syscall",
            "3:",
            "xor edi, edi",
            "mov rax, {exit}",
            "syscall",
            "2:",
            openat = const SYS_OPENAT,
            at_fdcwd = const AT_FDCWD,
            flags = const O_WRONLY_CLOEXEC,
            write = const SYS_WRITE,
            close = const SYS_CLOSE,
            exit = const SYS_EXIT,
            inlateout("rax") SYS_CLONE => _,
            in("rdi") THREAD_FLAGS,
            in("rsi") stack_top,
            in("rdx") 0usize,
            in("r10") 0usize,
            in("r8") 0usize,
            in("r12") path.as_ptr(),
            in("r13") text.as_ptr(),
            in("r14") text.len(),
            lateout("rcx") _,
            lateout("r11") _,
        );
        let _ = crate::foreground::set_signal_mask(libc::SIG_SETMASK, before);
    }
}

/// Elsewhere berth goes without the warm-up.
#[cfg(not(target_arch = "x86_64"))]
mod bare_thread {
    pub unsafe fn open_and_write(_path: &std::ffi::CStr, _text: &[u8]) {}
}

/// `cgroup.procs` of berth's own cgroup: in the v1 `pids` hierarchy, else in the v2 one.
fn own_cgroup_procs() -> Option<String> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path_of = |controllers: &str| {
        cgroups.lines().find_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, list, path) = (fields.next()?, fields.next()?, fields.next()?);
            (list == controllers).then(|| path.trim_end_matches('/').to_string())
        })
    };
    if let Some(path) = path_of("pids") {
        return Some(format!("/sys/fs/cgroup/pids{path}/cgroup.procs"));
    }
    let path = path_of("")?;
    let unified = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() { "" } else { "/unified" };
    Some(format!("/sys/fs/cgroup{unified}{path}/cgroup.procs"))
}
