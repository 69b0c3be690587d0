//! What Debian's libseccomp.a needs from the C library and musl lacks, for the release
//! build that links berth against musl: glibc's checked `fprintf`, which libseccomp uses
//! only to print a filter as text (`seccomp_export_pfc`). berth never does that; a call
//! would report the gap on stderr and fail as an output error.

use std::ffi::{c_char, c_int, c_void};

/// Called as `__fprintf_chk(FILE *, int flag, const char *format, ...)`; the variadic
/// arguments are left unread.
#[no_mangle]
extern "C" fn __fprintf_chk(_file: *mut c_void, _flag: c_int, _format: *const c_char) -> c_int {
    eprintln!("berth: printing a seccomp filter as text is not supported by this build (musl)");
    -1
}
