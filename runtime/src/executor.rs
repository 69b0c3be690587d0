//! The executor libcontainer runs in the container just before exec: it joins the
//! container's own session keyring (`_ses.<id>`, as runc does; `--no-new-keyring` keeps
//! the caller's), puts an exec'd process under the container's seccomp profile, and finds
//! the program on a default PATH when the spec's env has none.

use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use oci_spec::runtime::Spec;

use crate::exec_seccomp::ExecSeccomp;

/// The search path used when the spec's env sets no PATH (runc's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// libcontainer's executor, joining the container's session keyring just before exec.
#[derive(Clone)]
pub struct BerthExecutor {
    /// `None` keeps the caller's session keyring (`--no-new-keyring`).
    keyring: Option<String>,
    /// For a process exec'd into a running container: the container's seccomp profile.
    exec_seccomp: Option<ExecSeccomp>,
}

impl BerthExecutor {
    pub fn new(container_id: &str, new_keyring: bool) -> BerthExecutor {
        BerthExecutor { keyring: new_keyring.then(|| format!("_ses.{container_id}")), exec_seccomp: None }
    }

    /// The executor of a process exec'd into a container whose profile is `seccomp`.
    pub fn for_exec(container_id: &str, seccomp: Option<ExecSeccomp>) -> BerthExecutor {
        BerthExecutor { exec_seccomp: seccomp, ..BerthExecutor::new(container_id, true) }
    }
}

impl Executor for BerthExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        // A foreground berth blocks every signal from its start (`foreground::block_all`).
        crate::foreground::unblock_all()
            .map_err(|e| ExecutorError::Other(format!("cannot unblock signals before exec: {e}")))?;
        if let Some(name) = &self.keyring {
            join_session_keyring(name)?;
        }
        if let Some(seccomp) = &self.exec_seccomp {
            seccomp.apply()?;
        }
        if std::env::var_os("PATH").is_some() {
            return DefaultExecutor {}.exec(spec);
        }
        exec_on_default_path(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        let has_path = spec
            .process()
            .as_ref()
            .and_then(|p| p.env().as_ref())
            .is_some_and(|env| env.iter().any(|e| e.starts_with("PATH=")));
        if has_path {
            return DefaultExecutor {}.validate(spec);
        }
        // No PATH (ctr --rootfs gives none): look the program up as execvp will, on the
        // default search path.
        let mut with_path = spec.clone();
        if let Some(process) = with_path.process_mut() {
            let mut env = process.env().clone().unwrap_or_default();
            env.push(format!("PATH={DEFAULT_PATH}"));
            process.set_env(Some(env));
        }
        DefaultExecutor {}.validate(&with_path)
    }
}

/// Execs the process's program found on the default search path, keeping argv[0] and the
/// spec's environment as they are (without adding a PATH to it).
fn exec_on_default_path(spec: &Spec) -> Result<(), ExecutorError> {
    let args = spec.process().as_ref().and_then(|p| p.args().clone()).ok_or(ExecutorError::InvalidArg)?;
    let program = args.first().ok_or(ExecutorError::InvalidArg)?;
    let path = if program.contains('/') {
        std::path::PathBuf::from(program)
    } else {
        DEFAULT_PATH
            .split(':')
            .map(|dir| std::path::Path::new(dir).join(program))
            .find(|candidate| candidate.is_file())
            .ok_or_else(|| ExecutorError::Other(format!("executable '{program}' not found on {DEFAULT_PATH}")))?
    };
    let to_c = |text: &str| std::ffi::CString::new(text).map_err(|_| ExecutorError::InvalidArg);
    let argv: Vec<std::ffi::CString> = args.iter().map(|a| to_c(a)).collect::<Result<_, _>>()?;
    let path = to_c(&path.to_string_lossy())?;
    nix::unistd::execv(&path, &argv).map_err(|e| ExecutorError::Other(format!("cannot execute {program}: {e}")))?;
    unreachable!("execv returned without an error")
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
