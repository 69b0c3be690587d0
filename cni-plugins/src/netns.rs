//! Entering a network namespace by path for the rest of this (single-threaded) process.

use std::os::fd::AsRawFd;

use crate::error::{CniError, CniResult, INVALID_ENVIRONMENT};

/// Switches this thread into the network namespace at `path` (CNI_NETNS).
pub fn enter(path: &str) -> CniResult<()> {
    let file = std::fs::File::open(path).map_err(|e| CniError::new(INVALID_ENVIRONMENT, format!("cannot open netns {path}: {e}")))?;
    // SAFETY: setns on a descriptor this process holds.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(CniError::new(INVALID_ENVIRONMENT, format!("cannot enter netns {path}: {}", std::io::Error::last_os_error())));
    }
    Ok(())
}
