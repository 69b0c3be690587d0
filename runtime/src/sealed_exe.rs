//! CVE-2019-5736 protection: the commands that put a process into a container (create, run,
//! exec) first re-execute berth from a copy that cannot be written, so no process in the
//! container can reach the host's berth binary through `/proc/<pid>/exe` (or a reopened fd).
//! The copy is a detached, read-only overlayfs mount of the binary's own directory: no bytes
//! are copied, and it is in no mount namespace, so nothing needs removing; where overlayfs
//! cannot be made, a sealed memfd copy of the binary.

use std::ffi::{CString, OsString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::Path;

use anyhow::{Context, Result};
use rustix::fs::{Mode, OFlags, SealFlags};
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags};

/// overlayfs's f_type.
const OVERLAYFS_SUPER_MAGIC: rustix::fs::FsWord = 0x794c_7630;

/// Re-executes berth from a copy that cannot be written, unless it already runs from one.
/// Returns only when it already does.
pub fn ensure() -> Result<()> {
    if running_sealed() {
        return Ok(());
    }
    let copy = overlay_view()
        .or_else(|_| memfd_copy())
        .context("cannot make a read-only copy of berth's binary to run the container's setup from")?;
    let args: Vec<CString> = std::env::args_os().map(c_string).collect::<Result<_>>()?;
    let env: Vec<CString> = std::env::vars_os()
        .map(|(key, value)| {
            let mut pair = key;
            pair.push("=");
            pair.push(value);
            c_string(pair)
        })
        .collect::<Result<_>>()?;
    nix::unistd::fexecve(copy.as_raw_fd(), &args, &env).context("cannot re-execute berth from its read-only copy")?;
    unreachable!("fexecve returned without an error")
}

fn c_string(text: OsString) -> Result<CString> {
    CString::new(text.into_vec()).context("an argument or environment entry holds a NUL byte")
}

/// Whether berth's binary is a sealed memfd or on a read-only overlayfs mount.
fn running_sealed() -> bool {
    let Ok(exe) = rustix::fs::open("/proc/self/exe", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()) else {
        return false;
    };
    if rustix::fs::fcntl_get_seals(&exe).is_ok_and(|seals| seals.contains(SealFlags::WRITE)) {
        return true;
    }
    let overlay = rustix::fs::fstatfs(&exe).is_ok_and(|fs| fs.f_type == OVERLAYFS_SUPER_MAGIC);
    overlay && rustix::fs::fstatvfs(&exe).is_ok_and(|vfs| vfs.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY))
}

/// berth's binary seen through a detached read-only overlayfs of its directory (with an
/// empty tmpfs as the second layer overlayfs needs without an upper one).
fn overlay_view() -> Result<OwnedFd> {
    let exe = std::fs::read_link("/proc/self/exe").context("cannot read /proc/self/exe")?;
    let (Some(dir), Some(name)) = (exe.parent(), exe.file_name()) else {
        anyhow::bail!("berth's binary {} has no directory", exe.display())
    };
    anyhow::ensure!(exe.exists(), "berth's binary {} was removed", exe.display());
    let empty = detached("tmpfs", &[])?;
    let empty_path = format!("/proc/self/fd/{}", empty.as_raw_fd());
    let view = detached("overlay", &[dir, Path::new(&empty_path)])?;
    Ok(rustix::fs::openat(&view, name, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())?)
}

/// A new `fs_type` filesystem (overlayfs with `lowers`), mounted read-only nowhere.
fn detached(fs_type: &str, lowers: &[&Path]) -> Result<OwnedFd> {
    let fs = rustix::mount::fsopen(fs_type, FsOpenFlags::FSOPEN_CLOEXEC)?;
    for lower in lowers {
        rustix::mount::fsconfig_set_string(fs.as_fd(), "lowerdir+", *lower)?;
    }
    rustix::mount::fsconfig_create(fs.as_fd())?;
    let attributes =
        MountAttrFlags::MOUNT_ATTR_RDONLY | MountAttrFlags::MOUNT_ATTR_NODEV | MountAttrFlags::MOUNT_ATTR_NOSUID;
    Ok(rustix::mount::fsmount(fs.as_fd(), FsMountFlags::FSMOUNT_CLOEXEC, attributes)?)
}

/// A memfd holding a copy of berth's binary, sealed against every change.
fn memfd_copy() -> Result<OwnedFd> {
    let exe = rustix::fs::open("/proc/self/exe", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    let mut left = rustix::fs::fstat(&exe)?.st_size as usize;
    let copy =
        rustix::fs::memfd_create("berth", rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING)?;
    while left > 0 {
        let sent = rustix::fs::sendfile(&copy, &exe, None, left)?;
        anyhow::ensure!(sent > 0, "berth's binary ended early while being copied");
        left -= sent;
    }
    rustix::fs::fcntl_add_seals(&copy, SealFlags::SEAL | SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE)?;
    Ok(copy)
}
