//! The errors a task request can end in, each saying what failed on which container,
//! exec or path, and each kind mapped once (here) to the ttrpc code containerd acts on.

use std::fmt;
use std::path::PathBuf;

use containerd_shim::protos::ttrpc::{get_status, Code, Status};

use crate::runtime::Command;

#[derive(Debug)]
pub enum ShimError {
    /// No container with this id in this shim.
    NoContainer { id: String },
    /// No exec with this id in the container.
    NoExec { exec_id: String },
    /// Exec called twice with the same exec id.
    ExecExists { exec_id: String },
    /// Delete of an exec that still runs.
    ExecStillRunning { exec_id: String },
    /// Kill of an exec that has not started or has exited.
    ExecNotRunning { exec_id: String },
    /// A request that lacks what it needs or carries a value the shim cannot use.
    BadRequest(String),
    /// The runtime command failed; the message is the runtime's own.
    Runtime { command: Command, message: String },
    /// A file the shim writes for the runtime (exec process, update resources).
    File { path: PathBuf, source: std::io::Error },
    /// Opening a process's stdio or terminal failed.
    Stdio(String),
    /// Mounting containerd's rootfs mounts failed.
    Mount(String),
    /// The process has no terminal to resize, or the resize failed.
    Terminal(String),
    /// Signalling an exec's pid failed (it is gone).
    Signal { pid: i32, source: nix::Error },
    /// A reply the shim could not encode.
    Encode(String),
    /// A service or method the berth shim does not implement.
    Unimplemented(String),
}

impl ShimError {
    /// The ttrpc code containerd sees (it treats NOT_FOUND on Kill as "already gone", say).
    pub fn code(&self) -> Code {
        match self {
            ShimError::NoContainer { .. }
            | ShimError::NoExec { .. }
            | ShimError::ExecNotRunning { .. }
            | ShimError::Signal { .. } => Code::NOT_FOUND,
            ShimError::ExecExists { .. } => Code::ALREADY_EXISTS,
            ShimError::ExecStillRunning { .. } | ShimError::Terminal(_) => Code::FAILED_PRECONDITION,
            ShimError::BadRequest(_) => Code::INVALID_ARGUMENT,
            ShimError::Runtime { command, .. } => match command {
                // A container that is gone cannot be signalled; one in the wrong state cannot
                // be paused or resumed.
                Command::Kill => Code::NOT_FOUND,
                Command::Pause | Command::Resume => Code::FAILED_PRECONDITION,
                _ => Code::INTERNAL,
            },
            ShimError::File { .. } | ShimError::Stdio(_) | ShimError::Mount(_) | ShimError::Encode(_) => Code::INTERNAL,
            ShimError::Unimplemented(_) => Code::UNIMPLEMENTED,
        }
    }

    /// The status a ttrpc response carries.
    pub fn status(&self) -> Status {
        get_status(self.code(), self.to_string())
    }
}

impl fmt::Display for ShimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShimError::NoContainer { id } => write!(f, "container {id} does not exist in this shim"),
            ShimError::NoExec { exec_id } => write!(f, "exec {exec_id} does not exist"),
            ShimError::ExecExists { exec_id } => write!(f, "exec {exec_id} already exists"),
            ShimError::ExecStillRunning { exec_id } => write!(f, "exec {exec_id} is still running"),
            ShimError::ExecNotRunning { exec_id } => write!(f, "exec {exec_id} is not running"),
            ShimError::BadRequest(message)
            | ShimError::Stdio(message)
            | ShimError::Mount(message)
            | ShimError::Terminal(message) => f.write_str(message),
            ShimError::Runtime { message, .. } => f.write_str(message),
            ShimError::File { path, source } => write!(f, "cannot write {}: {source}", path.display()),
            ShimError::Signal { pid, source } => write!(f, "cannot signal pid {pid}: {source}"),
            ShimError::Encode(message) => write!(f, "cannot encode the reply: {message}"),
            ShimError::Unimplemented(what) => write!(f, "not implemented: {what} through the berth shim"),
        }
    }
}

impl std::error::Error for ShimError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime(command: Command) -> ShimError {
        ShimError::Runtime { command, message: "berth said no".into() }
    }

    #[test]
    fn runtime_failures_get_the_code_containerd_acts_on() {
        // containerd takes NOT_FOUND from Kill as "already gone" and carries on stopping.
        assert_eq!(runtime(Command::Kill).code(), Code::NOT_FOUND);
        assert_eq!(runtime(Command::Pause).code(), Code::FAILED_PRECONDITION);
        assert_eq!(runtime(Command::Resume).code(), Code::FAILED_PRECONDITION);
        assert_eq!(runtime(Command::Create).code(), Code::INTERNAL);
        let status = runtime(Command::Create).status();
        assert_eq!(
            (status.code(), status.message.as_str()),
            (Code::INTERNAL, "berth said no"),
            "berth's own message reaches the user"
        );
    }

    #[test]
    fn missing_and_duplicate_processes_have_their_own_codes() {
        assert_eq!(ShimError::NoContainer { id: "c".into() }.code(), Code::NOT_FOUND);
        assert_eq!(ShimError::ExecExists { exec_id: "e".into() }.code(), Code::ALREADY_EXISTS);
        assert_eq!(ShimError::ExecStillRunning { exec_id: "e".into() }.code(), Code::FAILED_PRECONDITION);
        let unimplemented = ShimError::Unimplemented("checkpoint".into()).status();
        assert_eq!(unimplemented.code(), Code::UNIMPLEMENTED);
        assert!(unimplemented.message.contains("not implemented"), "{}", unimplemented.message);
    }
}
