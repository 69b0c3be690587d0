//! Session keyrings: like runc, each container's processes join a keyring of their own,
//! named `_ses.<id>`, instead of the caller's session keyring (`--no-new-keyring` keeps it).

use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use oci_spec::runtime::Spec;

/// libcontainer's executor, joining the container's session keyring just before exec.
#[derive(Clone)]
pub struct KeyringExecutor {
    /// `None` keeps the caller's session keyring (`--no-new-keyring`).
    keyring: Option<String>,
}

impl KeyringExecutor {
    pub fn new(container_id: &str, new_keyring: bool) -> KeyringExecutor {
        KeyringExecutor { keyring: new_keyring.then(|| format!("_ses.{container_id}")) }
    }
}

impl Executor for KeyringExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        if let Some(name) = &self.keyring {
            join_session_keyring(name)?;
        }
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

/// keyctl(KEYCTL_JOIN_SESSION_KEYRING): joins the named keyring, creating it if needed.
/// This runs after the container's seccomp filter is in place, and common profiles
/// (Docker's, podman's) refuse keyctl: then the process cannot reach any keyring through
/// keyctl anyway, so ENOSYS, EPERM and EACCES are not errors.
fn join_session_keyring(name: &str) -> Result<(), ExecutorError> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    let name = std::ffi::CString::new(name).map_err(|_| ExecutorError::InvalidArg)?;
    // SAFETY: keyctl reads one NUL-terminated string.
    let result = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr()) };
    if result < 0 {
        let error = std::io::Error::last_os_error();
        if !matches!(error.raw_os_error(), Some(libc::ENOSYS | libc::EPERM | libc::EACCES)) {
            return Err(ExecutorError::Other(format!("cannot join session keyring {name:?}: {error}")));
        }
    }
    Ok(())
}
