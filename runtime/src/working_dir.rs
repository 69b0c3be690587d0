//! process.cwd made in the rootfs when it is missing, as runc does: images name a WorkingDir
//! their layers never created, and callers (podman, Docker's `-w`) rely on the runtime to make it.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{mkdirat, Mode};
use oci_spec::runtime::Spec;

/// Creates the directories of process.cwd that do not exist in `rootfs` (mode 0755, owned by
/// the caller, as runc makes them). A cwd that lies on a mount other than the rootfs is left
/// to that mount: the directory would be hidden under it.
pub fn ensure(spec: &Spec, rootfs: &Path) -> Result<()> {
    let Some(cwd) = spec.process().as_ref().map(|p| p.cwd().clone()) else { return Ok(()) };
    let names: Vec<&std::ffi::OsStr> = cwd
        .components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name),
            _ => None,
        })
        .collect();
    if names.is_empty() || on_a_mount(spec, &cwd) {
        return Ok(());
    }
    let root = open_dir(libc::AT_FDCWD, rootfs, ResolveFlag::empty())
        .with_context(|| format!("cannot open rootfs {}", rootfs.display()))?;
    for depth in 0..names.len() {
        let so_far: PathBuf = names[..=depth].iter().collect();
        match open_in_rootfs(&root, &so_far) {
            Ok(_) => continue,
            Err(Errno::ENOENT) => {}
            Err(Errno::ENOTDIR) => {
                bail!(
                    "process.cwd {} cannot be made: /{} is not a directory in the rootfs",
                    cwd.display(),
                    so_far.display()
                )
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot open /{} in {}", so_far.display(), rootfs.display()))
            }
        }
        let parent: PathBuf = names[..depth].iter().collect();
        let parent = open_in_rootfs(&root, &parent)
            .with_context(|| format!("cannot open /{} in {}", parent.display(), rootfs.display()))?;
        mkdirat(Some(parent.as_raw_fd()), names[depth], Mode::from_bits_truncate(0o755)).with_context(|| {
            format!("cannot create the working directory /{} in {}", so_far.display(), rootfs.display())
        })?;
    }
    Ok(())
}

/// True when a mount other than `/` covers `cwd`.
fn on_a_mount(spec: &Spec, cwd: &Path) -> bool {
    let mounts = spec.mounts().as_deref().unwrap_or_default();
    mounts.iter().any(|m| m.destination() != Path::new("/") && cwd.starts_with(m.destination()))
}

/// Opens `path` below the rootfs; symlinks resolve as if the rootfs were `/`, so nothing in
/// it can lead the walk out.
fn open_in_rootfs(root: &OwnedFd, path: &Path) -> std::result::Result<OwnedFd, Errno> {
    let path = if path.as_os_str().is_empty() { Path::new(".") } else { path };
    open_dir(root.as_raw_fd(), path, ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

fn open_dir(dir: RawFd, path: &Path, resolve: ResolveFlag) -> std::result::Result<OwnedFd, Errno> {
    let how = OpenHow::new().flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC).resolve(resolve);
    let fd = openat2(dir, path, how)?;
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
