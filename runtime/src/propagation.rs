//! Per-mount propagation (`shared`, `slave`, `private`, `unbindable` and their recursive
//! forms), which libcontainer 0.7 parses but does not apply: berth sets it in the
//! container's mount namespace after create, before the process can start.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;

use anyhow::{bail, Context, Result};
use nix::mount::MsFlags;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, pipe, ForkResult, Pid};
use oci_spec::runtime::Spec;

/// The propagation flags a mount option asks for, if it is one.
fn propagation_flags(option: &str) -> Option<MsFlags> {
    Some(match option {
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

/// Each mount's destination with the propagation changes its options ask for, in order.
fn requested(spec: &Spec) -> Vec<(String, MsFlags)> {
    let mut changes = Vec::new();
    for mount in spec.mounts().iter().flatten() {
        for option in mount.options().iter().flatten() {
            if let Some(flags) = propagation_flags(option) {
                changes.push((mount.destination().to_string_lossy().into_owned(), flags));
            }
        }
    }
    changes
}

/// Applies the spec's per-mount propagation inside the mount namespace of `init`.
pub fn apply(init: Pid, spec: &Spec, id: &str) -> Result<()> {
    let changes = requested(spec);
    if changes.is_empty() {
        return Ok(());
    }
    let targets: Vec<CString> = changes
        .iter()
        .map(|(dest, _)| CString::new(dest.as_str()).context("mount destination holds a NUL byte"))
        .collect::<Result<_>>()?;
    let namespace = File::open(format!("/proc/{init}/ns/mnt"))
        .with_context(|| format!("cannot open the mount namespace of container {id}"))?;
    let (report_read, report_write) = pipe().context("cannot create a pipe")?;
    // SAFETY: the child only makes syscalls on data prepared above, then _exits.
    match unsafe { fork() }.context("cannot fork to set mount propagation")? {
        ForkResult::Child => {
            drop(report_read);
            let mut failed: [i32; 2] = [-1, 0];
            // SAFETY: plain syscalls on valid descriptors and NUL-terminated strings.
            unsafe {
                if libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNS) != 0 {
                    failed = [-2, *libc::__errno_location()];
                } else {
                    for (index, (target, (_, flags))) in targets.iter().zip(&changes).enumerate() {
                        let ok = libc::mount(
                            std::ptr::null(),
                            target.as_ptr(),
                            std::ptr::null(),
                            flags.bits(),
                            std::ptr::null(),
                        );
                        if ok != 0 {
                            failed = [index as i32, *libc::__errno_location()];
                            break;
                        }
                    }
                }
                let bytes = [failed[0].to_ne_bytes(), failed[1].to_ne_bytes()].concat();
                libc::write(report_write.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
                libc::_exit(0);
            }
        }
        ForkResult::Parent { child } => {
            drop(report_write);
            let mut report = Vec::new();
            File::from(report_read).read_to_end(&mut report).context("cannot read the propagation report")?;
            let status = waitpid(child, None).context("cannot wait for the propagation helper")?;
            if report.len() != 8 || !matches!(status, WaitStatus::Exited(_, 0)) {
                bail!("container {id}: the mount propagation helper failed ({status:?})");
            }
            let index = i32::from_ne_bytes(report[0..4].try_into().unwrap());
            let errno = nix::errno::Errno::from_raw(i32::from_ne_bytes(report[4..8].try_into().unwrap()));
            match index {
                -1 => Ok(()),
                -2 => bail!("cannot enter the mount namespace of container {id}: {errno}"),
                n => bail!("cannot set the propagation of mount {} in container {id}: {errno}", changes[n as usize].0),
            }
        }
    }
}
