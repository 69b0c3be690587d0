//! The `berth-cni` binary: the CNI plugin named by the file it runs as (`host-local`,
//! `loopback`, ...), so one binary linked under each name fills a CNI bin directory.
//!
//! Its `main` is the C one, without Rust's runtime start-up: that reads /proc/self/maps to
//! find the main thread's stack and gives every thread a signal stack, all to report a
//! stack overflow by name, a sizeable part of a CNI call that lasts a few milliseconds.
//! What of it a plugin relies on is done here (an overflow then ends the process with
//! SIGSEGV instead of a message), and the arguments are read from `argv` (under musl, the
//! release build's libc, only Rust's start-up fills `std::env::args`). A test build keeps
//! the test harness's own main.
#![cfg_attr(not(test), no_main)]

#[cfg(not(test))]
use std::ffi::{c_char, c_int};
#[cfg(not(test))]
use std::os::unix::ffi::OsStrExt;

#[cfg(target_env = "musl")]
mod allocator;

#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: allocator::Allocator = allocator::Allocator::new();

/// Opens /dev/null on each of stdin, stdout and stderr that is closed, so that no file
/// this process opens later takes their place (and gets results or errors written into it).
#[cfg(not(test))]
fn keep_standard_descriptors_open() {
    let mut standard = [0, 1, 2].map(|fd| libc::pollfd { fd, events: 0, revents: 0 });
    // SAFETY: poll reads and writes only the array it is given.
    if unsafe { libc::poll(standard.as_mut_ptr(), standard.len() as libc::nfds_t, 0) } < 0 {
        return;
    }
    for _ in standard.iter().filter(|fd| fd.revents & libc::POLLNVAL != 0) {
        // SAFETY: a plain open; it returns the lowest free descriptor, the closed one.
        unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
    }
}

#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn main(argc: c_int, argv: *const *const c_char) -> c_int {
    keep_standard_descriptors_open();
    // A closed pipe is an error to handle, not a signal that kills: as in Rust programs.
    // SAFETY: setting a signal's disposition to ignore.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    // SAFETY: the C runtime passes argc strings, each ending in a NUL, in argv.
    let args = (0..usize::try_from(argc).unwrap_or(0))
        .map(|i| unsafe { std::ffi::CStr::from_ptr(*argv.add(i)) })
        .map(|arg| std::ffi::OsStr::from_bytes(arg.to_bytes()).to_os_string())
        .collect();
    // exit, not a return: it flushes stdout first.
    std::process::exit(berth_cni::run_as(args))
}
