//! Network namespaces by path: entering one for good (loopback), or running a closure in
//! one and coming back (bridge configures both sides of a veth). setns moves only the
//! calling thread, so a thread's own namespace is where it returns to.

use std::fs::File;
use std::os::fd::AsRawFd;

use crate::error::{CniError, CniResult, INVALID_ENVIRONMENT};

pub fn open(path: &str) -> CniResult<File> {
    File::open(path).map_err(|e| CniError::new(INVALID_ENVIRONMENT, format!("cannot open netns {path}: {e}")))
}

fn set(ns: &File, what: &str) -> CniResult<()> {
    // SAFETY: setns on a descriptor this process holds.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(CniError::new(
            INVALID_ENVIRONMENT,
            format!("cannot enter netns {what}: {}", std::io::Error::last_os_error()),
        ));
    }
    Ok(())
}

/// Switches into the network namespace at `path` (CNI_NETNS) for the rest of the call.
pub fn enter(path: &str) -> CniResult<()> {
    set(&open(path)?, path)
}

/// Runs `work` inside `ns` and returns the calling thread to the namespace it was in.
pub fn within<T>(ns: &File, work: impl FnOnce() -> CniResult<T>) -> CniResult<T> {
    let home = open("/proc/thread-self/ns/net")?;
    set(ns, "of the container")?;
    let result = work();
    set(&home, "of the host")?;
    result
}
