//! CVE-2019-5736 protection: the commands that put a process into a container (create, run,
//! exec) first re-execute berth from a copy that cannot be written, so no process in the
//! container can reach the host's berth binary through `/proc/<pid>/exe` (or a reopened fd).
//! The copy is a detached, read-only overlayfs mount of the binary's own directory: no bytes
//! are copied, and it is in no mount namespace, so nothing needs removing; where overlayfs
//! cannot be made, a sealed memfd copy of the binary. The binary's entry point
//! (`early_seal`, before the C library starts) usually makes the overlayfs view already;
//! this module checks for it and does the work itself when that could not.

use std::ffi::{CString, OsString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::Path;

use anyhow::{Context, Result};
use rustix::fs::{Mode, OFlags, SealFlags};
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags};

/// overlayfs's f_type.
const OVERLAYFS_SUPER_MAGIC: rustix::fs::FsWord = libc::OVERLAYFS_SUPER_MAGIC as _;

/// Re-executes berth from a copy that cannot be written, unless it already runs from one.
/// Returns only when it already does.
pub fn ensure() -> Result<()> {
    if running_sealed() {
        return Ok(());
    }
    tracing::debug!("berth's entry point did not re-execute it from a sealed copy: doing it after start-up");
    let copy = overlay_view()
        .or_else(|overlay| {
            tracing::debug!(
                "no read-only overlayfs view of berth's binary ({overlay:#}): copying it to a sealed memfd"
            );
            memfd_copy()
        })
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

/// Whether berth's binary is a sealed memfd, or on a read-only overlayfs mounted nowhere
/// (the view `overlay_view` makes; a berth installed on a read-only overlay root, as in a
/// container image, is on a mount that a remount could make writable again).
fn running_sealed() -> bool {
    let Ok(exe) = rustix::fs::open("/proc/self/exe", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()) else {
        return false;
    };
    if rustix::fs::fcntl_get_seals(&exe).is_ok_and(|seals| seals.contains(SealFlags::WRITE)) {
        return true;
    }
    let overlay = rustix::fs::fstatfs(&exe).is_ok_and(|fs| fs.f_type == OVERLAYFS_SUPER_MAGIC);
    let read_only =
        rustix::fs::fstatvfs(&exe).is_ok_and(|vfs| vfs.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY));
    overlay && read_only && mount_id(&exe).is_none_or(|id| !is_mounted(id))
}

/// The id of the mount `file` is on.
fn mount_id(file: &OwnedFd) -> Option<u64> {
    let stat = rustix::fs::statx(file, "", rustix::fs::AtFlags::EMPTY_PATH, rustix::fs::StatxFlags::MNT_ID).ok()?;
    (stat.stx_mask & rustix::fs::StatxFlags::MNT_ID.bits() != 0).then_some(stat.stx_mnt_id)
}

/// Whether mount `id` is in this process's mount namespace.
fn is_mounted(id: u64) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mounts.lines().any(|line| line.split(' ').next().and_then(|field| field.parse::<u64>().ok()) == Some(id))
}

/// Whether `path` is itself a mount's root (a binary bind-mounted over another path): an
/// overlayfs view of its directory would show the file underneath instead.
fn is_mount_root(path: &Path) -> bool {
    rustix::fs::statx(rustix::fs::CWD, path, rustix::fs::AtFlags::empty(), rustix::fs::StatxFlags::BASIC_STATS)
        .is_ok_and(|stat| stat.stx_attributes.contains(rustix::fs::StatxAttributes::MOUNT_ROOT))
}

/// berth's binary seen through a detached read-only overlayfs of its directory (with an
/// empty tmpfs as the second layer overlayfs needs without an upper one).
fn overlay_view() -> Result<OwnedFd> {
    let exe = std::fs::read_link("/proc/self/exe").context("cannot read /proc/self/exe")?;
    let (Some(dir), Some(name)) = (exe.parent(), exe.file_name()) else {
        anyhow::bail!("berth's binary {} has no directory", exe.display())
    };
    anyhow::ensure!(exe.exists(), "berth's binary {} was removed", exe.display());
    anyhow::ensure!(!is_mount_root(&exe), "berth's binary {} is bind-mounted", exe.display());
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
    if !lowers.is_empty() {
        // Inode numbers of one file: no xino warnings in the kernel log on every call.
        rustix::mount::fsconfig_set_string(fs.as_fd(), "xino", "off")?;
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
