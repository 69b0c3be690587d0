//! berth's own mount work inside a created container's mount namespace (after create,
//! before start): a forked helper enters the namespace of the container's init, does the
//! work and reports its error back, so berth itself stays in the host's namespace.

use std::fs::File;
use std::io::Read;

use anyhow::{bail, Context, Result};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, pipe, ForkResult, Pid};

/// Runs `work` in a child that has entered the mount namespace of container `id`'s init.
pub fn run_inside(init: Pid, id: &str, work: impl FnOnce() -> Result<()>) -> Result<()> {
    let namespace = File::open(format!("/proc/{init}/ns/mnt"))
        .with_context(|| format!("cannot open the mount namespace of container {id}"))?;
    let (report_read, report_write) = pipe().context("cannot create a pipe")?;
    // SAFETY: berth has no other thread here; the child works and _exits.
    match unsafe { fork() }.context("cannot fork to work in the container's mount namespace")? {
        ForkResult::Child => {
            drop(report_read);
            let outcome = nix::sched::setns(&namespace, nix::sched::CloneFlags::CLONE_NEWNS)
                .context("cannot enter the container's mount namespace")
                .and_then(|()| work());
            let code = match outcome {
                Ok(()) => 0,
                Err(error) => {
                    let mut report = File::from(report_write);
                    let _ = std::io::Write::write_all(&mut report, format!("{error:#}").as_bytes());
                    1
                }
            };
            // SAFETY: ends the forked child without running the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(report_write);
            let mut report = String::new();
            File::from(report_read).read_to_string(&mut report).context("cannot read the mount helper's report")?;
            let status = waitpid(child, None).context("cannot wait for the mount helper")?;
            match status {
                WaitStatus::Exited(_, 0) => Ok(()),
                _ if !report.is_empty() => bail!("container {id}: {report}"),
                _ => bail!("container {id}: the mount helper failed ({status:?})"),
            }
        }
    }
}
