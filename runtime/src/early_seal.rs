//! berth's entry point, before the C library starts: for the commands that put a process
//! into a container (create, run, exec) it re-executes berth from a read-only overlayfs view
//! of its directory, as `sealed_exe::ensure` would after start-up, so the CVE-2019-5736
//! protection costs no second start of the C library (glibc probes the CPU's caches with
//! ~60 `cpuid` instructions, each a trap to the hypervisor on a VM: ~0.7 ms per start
//! here). Nothing in here may use thread-local storage, the heap or any C library function
//! (a static glibc has not even resolved its own `memcpy` yet): raw system calls, stack
//! buffers and byte loops only. When anything fails it returns and the normal start-up
//! follows, where `sealed_exe::ensure` does the same work or its memfd fallback.

use core::arch::{asm, global_asm};
use core::mem::MaybeUninit;

// The kernel starts berth here (the linker's entry, set in build.rs) with argc, argv and
// envp on the stack; glibc's `_start` then gets the same stack and %rdx (the dynamic
// loader's finalizer, when there is one) untouched.
global_asm!(
    ".globl berth_entry",
    ".type berth_entry, @function",
    "berth_entry:",
    "mov rdi, rsp",
    "push rdx",
    "push rdx",
    "call {pre_start}",
    "pop rdx",
    "pop rdx",
    "jmp _start",
    pre_start = sym pre_start,
);

const SYS_CLOSE: usize = libc::SYS_close as usize;
const SYS_READLINK: usize = libc::SYS_readlink as usize;
const SYS_FSTATFS: usize = libc::SYS_fstatfs as usize;
const SYS_OPENAT: usize = libc::SYS_openat as usize;
const SYS_EXECVEAT: usize = libc::SYS_execveat as usize;
const SYS_STATX: usize = libc::SYS_statx as usize;
const SYS_FSOPEN: usize = libc::SYS_fsopen as usize;
const SYS_FSCONFIG: usize = libc::SYS_fsconfig as usize;
const SYS_FSMOUNT: usize = libc::SYS_fsmount as usize;

const AT_FDCWD: isize = libc::AT_FDCWD as isize;
const AT_EMPTY_PATH: usize = libc::AT_EMPTY_PATH as usize;
const O_PATH_CLOEXEC: usize = (libc::O_PATH | libc::O_CLOEXEC) as usize;
const FSOPEN_CLOEXEC: usize = rustix::mount::FsOpenFlags::FSOPEN_CLOEXEC.bits() as usize;
// fsconfig(2)'s commands, from linux/mount.h (neither libc nor rustix exports them).
const FSCONFIG_SET_STRING: usize = 1;
const FSCONFIG_CMD_CREATE: usize = 6;
const FSMOUNT_CLOEXEC: usize = rustix::mount::FsMountFlags::FSMOUNT_CLOEXEC.bits() as usize;
const MOUNT_ATTR_RDONLY_NOSUID_NODEV: usize = rustix::mount::MountAttrFlags::MOUNT_ATTR_RDONLY
    .union(rustix::mount::MountAttrFlags::MOUNT_ATTR_NOSUID)
    .union(rustix::mount::MountAttrFlags::MOUNT_ATTR_NODEV)
    .bits() as usize;
const STATX_BASIC_STATS: usize = libc::STATX_BASIC_STATS as usize;
const STATX_ATTR_MOUNT_ROOT: u64 = libc::STATX_ATTR_MOUNT_ROOT as u64;
const OVERLAYFS_SUPER_MAGIC: u64 = libc::OVERLAYFS_SUPER_MAGIC as u64;
const ST_RDONLY: u64 = libc::ST_RDONLY;
const PATH_MAX: usize = libc::PATH_MAX as usize;

/// `stack` points at argc, followed by argv and its NULL, then envp and its NULL.
unsafe extern "C" fn pre_start(stack: *const usize) {
    let argc = *stack;
    let argv = stack.add(1) as *const *const u8;
    let envp = argv.add(argc + 1);
    if !enters_container(argc, argv) || runs_from_read_only_overlay() {
        return;
    }
    let Some(view) = overlay_view() else { return };
    // Returns only when the kernel refused; the normal start-up then tries again.
    syscall(SYS_EXECVEAT, [view as usize, c"".as_ptr() as usize, argv as usize, envp as usize, AT_EMPTY_PATH]);
    syscall(SYS_CLOSE, [view as usize, 0, 0, 0, 0]);
}

/// Whether berth's command (the first argument that is neither a global flag nor its value)
/// is one that puts a process into a container. A wrong answer costs only time: berth
/// seals itself after start-up all the same.
unsafe fn enters_container(argc: usize, argv: *const *const u8) -> bool {
    let mut i = 1;
    while i < argc {
        let arg = *argv.add(i);
        if is(arg, b"--root") || is(arg, b"--log") || is(arg, b"--log-format") || is(arg, b"--criu") {
            i += 2;
        } else if is(arg, b"--rootless") {
            let next = if i + 1 < argc { *argv.add(i + 1) } else { c"".as_ptr() as *const u8 };
            i += if is(next, b"true") || is(next, b"false") || is(next, b"auto") { 2 } else { 1 };
        } else if byte(arg, 0) == b'-' {
            i += 1;
        } else {
            return is(arg, b"create") || is(arg, b"run") || is(arg, b"exec");
        }
    }
    false
}

/// Whether the NUL-terminated `arg` is `word`. Volatile reads keep the compiler from
/// turning the loop into a call to the C library's `memcmp`.
unsafe fn is(arg: *const u8, word: &[u8]) -> bool {
    let mut i = 0;
    while i < word.len() {
        if byte(arg, i) != word[i] {
            return false;
        }
        i += 1;
    }
    byte(arg, word.len()) == 0
}

unsafe fn byte(text: *const u8, at: usize) -> u8 {
    core::ptr::read_volatile(text.add(at))
}

/// Whether berth already runs from a read-only overlayfs: the view made here, or one that
/// `sealed_exe` inspects more closely after start-up.
unsafe fn runs_from_read_only_overlay() -> bool {
    let exe = syscall(SYS_OPENAT, [AT_FDCWD as usize, c"/proc/self/exe".as_ptr() as usize, O_PATH_CLOEXEC, 0, 0]);
    if exe < 0 {
        return false;
    }
    // struct statfs: f_type at 0, f_flags at byte 80, 120 bytes in all.
    let mut fs = MaybeUninit::<[u64; 15]>::uninit();
    let found = syscall(SYS_FSTATFS, [exe as usize, fs.as_mut_ptr() as usize, 0, 0, 0]) == 0;
    syscall(SYS_CLOSE, [exe as usize, 0, 0, 0, 0]);
    if !found {
        return false;
    }
    let fs = fs.assume_init_ref();
    fs[0] == OVERLAYFS_SUPER_MAGIC && fs[10] & ST_RDONLY != 0
}

/// An O_PATH fd of berth's binary seen through a detached read-only overlayfs of its
/// directory, with an empty tmpfs as the second lower layer; `sealed_exe::overlay_view`
/// is the same after start-up.
unsafe fn overlay_view() -> Option<isize> {
    let mut path = MaybeUninit::<[u8; PATH_MAX]>::uninit();
    let path = path.as_mut_ptr() as *mut u8;
    let len = syscall(SYS_READLINK, [c"/proc/self/exe".as_ptr() as usize, path as usize, PATH_MAX - 1, 0, 0]);
    if len <= 0 {
        return None;
    }
    core::ptr::write_volatile(path.add(len as usize), 0);
    // A removed binary reads as "PATH (deleted)", which does not exist; a bind-mounted one
    // would show the file under it in a view of its directory.
    let mut stat = MaybeUninit::<[u64; 32]>::uninit();
    let stat_ptr = stat.as_mut_ptr() as usize;
    if syscall(SYS_STATX, [AT_FDCWD as usize, path as usize, 0, STATX_BASIC_STATS, stat_ptr]) != 0 {
        return None;
    }
    // struct statx: stx_attributes at byte 8.
    if stat.assume_init_ref()[1] & STATX_ATTR_MOUNT_ROOT != 0 {
        return None;
    }
    let mut slash = len as usize;
    while slash > 0 && byte(path, slash) != b'/' {
        slash -= 1;
    }
    if slash == 0 {
        return None;
    }
    core::ptr::write_volatile(path.add(slash), 0);
    let (dir, name) = (path as *const u8, path.add(slash + 1) as *const u8);

    let empty = detached(c"tmpfs".as_ptr().cast(), &[])?;
    let mut empty_path = MaybeUninit::<[u8; 32]>::uninit();
    let empty_path = empty_path.as_mut_ptr() as *mut u8;
    write_fd_path(empty_path, empty as usize);
    let view = detached(c"overlay".as_ptr().cast(), &[dir, empty_path]);
    syscall(SYS_CLOSE, [empty as usize, 0, 0, 0, 0]);
    let view = view?;
    let exe = syscall(SYS_OPENAT, [view as usize, name as usize, O_PATH_CLOEXEC, 0, 0]);
    syscall(SYS_CLOSE, [view as usize, 0, 0, 0, 0]);
    (exe >= 0).then_some(exe)
}

/// A new filesystem of `fs_type` (with the NUL-terminated `lowers` as overlayfs layers),
/// mounted read-only, nosuid and nodev nowhere.
unsafe fn detached(fs_type: *const u8, lowers: &[*const u8]) -> Option<isize> {
    let context = syscall(SYS_FSOPEN, [fs_type as usize, FSOPEN_CLOEXEC, 0, 0, 0]);
    if context < 0 {
        return None;
    }
    let mut configured = true;
    for lower in lowers {
        let key = c"lowerdir+".as_ptr() as usize;
        configured &= syscall(SYS_FSCONFIG, [context as usize, FSCONFIG_SET_STRING, key, *lower as usize, 0]) == 0;
    }
    if !lowers.is_empty() {
        // One file's inode numbers: no xino warning in the kernel log on every call.
        let (key, value) = (c"xino".as_ptr() as usize, c"off".as_ptr() as usize);
        configured &= syscall(SYS_FSCONFIG, [context as usize, FSCONFIG_SET_STRING, key, value, 0]) == 0;
    }
    configured &= syscall(SYS_FSCONFIG, [context as usize, FSCONFIG_CMD_CREATE, 0, 0, 0]) == 0;
    let mount = if configured {
        syscall(SYS_FSMOUNT, [context as usize, FSMOUNT_CLOEXEC, MOUNT_ATTR_RDONLY_NOSUID_NODEV, 0, 0])
    } else {
        -1
    };
    syscall(SYS_CLOSE, [context as usize, 0, 0, 0, 0]);
    (mount >= 0).then_some(mount)
}

/// Writes "/proc/self/fd/FD" and its NUL at `out` (32 bytes are enough for any fd).
unsafe fn write_fd_path(out: *mut u8, fd: usize) {
    let prefix = b"/proc/self/fd/";
    let mut at = 0;
    while at < prefix.len() {
        core::ptr::write_volatile(out.add(at), prefix[at]);
        at += 1;
    }
    let (mut digits, mut rest) = (1, fd / 10);
    while rest > 0 {
        digits += 1;
        rest /= 10;
    }
    rest = fd;
    for place in (0..digits).rev() {
        core::ptr::write_volatile(out.add(at + place), b'0' + (rest % 10) as u8);
        rest /= 10;
    }
    core::ptr::write_volatile(out.add(at + digits), 0);
}

/// One Linux x86_64 system call; returns the result or -errno.
unsafe fn syscall(number: usize, args: [usize; 5]) -> isize {
    let result: isize;
    asm!(
        "syscall",
        inlateout("rax") number as isize => result,
        in("rdi") args[0],
        in("rsi") args[1],
        in("rdx") args[2],
        in("r10") args[3],
        in("r8") args[4],
        lateout("rcx") _,
        lateout("r11") _,
        options(nostack),
    );
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;

    fn enters(args: &[&str]) -> bool {
        let owned: Vec<CString> = args.iter().map(|arg| CString::new(*arg).unwrap()).collect();
        let mut argv: Vec<*const u8> = owned.iter().map(|arg| arg.as_ptr().cast()).collect();
        argv.push(std::ptr::null());
        // SAFETY: argv holds `args.len()` NUL-terminated strings and a NULL, as the kernel's.
        unsafe { enters_container(args.len(), argv.as_ptr()) }
    }

    #[test]
    fn the_command_is_found_past_global_flags_and_their_values() {
        assert!(enters(&["berth", "run", "-b", "/b", "id"]));
        assert!(enters(&["berth", "--root", "/r", "--log", "/l", "--log-format", "json", "create", "id"]));
        assert!(enters(&["berth", "--debug", "--systemd-cgroup", "exec", "id", "true"]));
        assert!(enters(&["berth", "--rootless", "true", "exec", "id", "true"]));
        assert!(enters(&["berth", "--rootless", "run", "id"]));
        assert!(enters(&["berth", "--root=/r", "run", "id"]));
        // A flag's value is not the command, whatever it reads.
        assert!(!enters(&["berth", "--root", "run", "state", "id"]));
        assert!(!enters(&["berth", "--criu", "exec", "list"]));
        assert!(!enters(&["berth", "state", "run"]));
        assert!(!enters(&["berth", "delete", "-f", "create"]));
        assert!(!enters(&["berth"]));
        assert!(!enters(&["berth", "--root"]));
    }

    #[test]
    fn fd_paths_are_written_with_every_digit() {
        for (fd, text) in
            [(0, "/proc/self/fd/0"), (7, "/proc/self/fd/7"), (10, "/proc/self/fd/10"), (1234, "/proc/self/fd/1234")]
        {
            let mut out = [0xffu8; 32];
            // SAFETY: 32 bytes hold the prefix, ten digits and the NUL.
            unsafe { write_fd_path(out.as_mut_ptr(), fd) };
            let end = out.iter().position(|byte| *byte == 0).unwrap();
            assert_eq!(std::str::from_utf8(&out[..end]).unwrap(), text);
        }
    }
}
