//! Where a path of a bundle's container is read and written. While the container runs:
//! through its own root directory (`/proc/PID/root`, which walks the container's mount
//! namespace, so volumes, binds and tmpfs are seen as the container sees them). Once it has
//! stopped: through the rootfs, or the source of the bind mount (volume) config.json puts
//! over the path; a tmpfs no longer exists then, and copying there is refused.
//!
//! A stopped container's symlinks resolve within the filesystem they lie on (the rootfs or
//! the mount's source), never outside it.

use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use oci_spec::runtime::{Mount, Spec};
use rustix::fs::{Mode, OFlags};

use super::{relative, Place};

/// The place of `path` in the container of `bundle`; `arg` is how the user wrote it.
pub fn resolve(bundle: &Path, path: &str, arg: &str) -> Result<Place> {
    let spec = Spec::load(bundle.join("config.json"))
        .with_context(|| format!("cannot read {}/config.json", bundle.display()))?;
    let root = spec.root().as_ref().with_context(|| format!("{}/config.json has no root", bundle.display()))?;
    let rootfs = bundle.join(root.path());
    if let Some(place) = running_root(&rootfs, path, arg)? {
        return Ok(place);
    }
    let inside = Path::new("/").join(path);
    let mounts = spec.mounts().as_deref().unwrap_or_default();
    let Some(mount) = covering_mount(mounts, &inside) else {
        return Ok(Place {
            root: open_dir(&rootfs)?,
            path: relative(path),
            shown: arg.to_string(),
            read_only: root.readonly().unwrap_or(false),
        });
    };
    let options = mount.options().as_deref().unwrap_or_default();
    let is_bind = mount.typ().as_deref() == Some("bind") || options.iter().any(|o| o == "bind" || o == "rbind");
    if !is_bind {
        bail!(
            "{arg} lies on the {} mount at {}, which exists only while the container runs; start it to copy there",
            mount.typ().as_deref().unwrap_or("unnamed"),
            mount.destination().display()
        );
    }
    let source = mount
        .source()
        .as_ref()
        .with_context(|| format!("the mount at {} has no source", mount.destination().display()))?;
    let source = bundle.join(source);
    let rest = lexical(&inside).strip_prefix(lexical(mount.destination())).unwrap_or(Path::new("")).to_path_buf();
    let read_only = options.iter().any(|o| o == "ro");
    // A file bound over a file (the init layer's /etc/hosts and friends): its directory is
    // the root, the file the path.
    if !source.is_dir() {
        let (Some(dir), Some(file)) = (source.parent(), source.file_name()) else {
            bail!("the mount source {} names no file", source.display())
        };
        if !rest.as_os_str().is_empty() {
            bail!(
                "{arg} lies below {}, which is a file bound over {}",
                source.display(),
                mount.destination().display()
            );
        }
        return Ok(Place { root: open_dir(dir)?, path: PathBuf::from(file), shown: arg.to_string(), read_only });
    }
    Ok(Place { root: open_dir(&source)?, path: rest, shown: arg.to_string(), read_only })
}

/// The deepest mount whose destination is `path` or one of its parents (not `/`).
fn covering_mount<'a>(mounts: &'a [Mount], path: &Path) -> Option<&'a Mount> {
    let path = lexical(path);
    mounts
        .iter()
        .filter(|m| {
            let destination = lexical(m.destination());
            destination != Path::new("/") && path.starts_with(&destination)
        })
        .max_by_key(|m| lexical(m.destination()).components().count())
}

/// `.` and `..` taken out of an absolute path (`..` at the top stays at the top).
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(name) => out.push(name),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// The root of the running container whose root directory is `rootfs`, when one runs.
fn running_root(rootfs: &Path, path: &str, arg: &str) -> Result<Option<Place>> {
    let rootfs_stat = rustix::fs::stat(rootfs).with_context(|| format!("cannot stat {}", rootfs.display()))?;
    for user in crate::in_use::users(rootfs)? {
        if user.through != "root directory" {
            continue;
        }
        let Ok(root) = rustix::fs::open(
            format!("/proc/{}/root", user.pid).as_str(),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            continue; // gone meanwhile
        };
        // Its root must be the rootfs itself: not a directory below it (a chroot inside the
        // container), nor another process's after the pid was reused since the scan.
        if rustix::fs::fstat(&root).is_ok_and(|st| (st.st_dev, st.st_ino) == (rootfs_stat.st_dev, rootfs_stat.st_ino)) {
            return Ok(Some(Place { root, path: relative(path), shown: arg.to_string(), read_only: false }));
        }
    }
    Ok(None)
}

fn open_dir(path: &Path) -> Result<std::os::fd::OwnedFd> {
    rustix::fs::open(path, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .with_context(|| format!("cannot open {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::MountBuilder;

    fn mount(destination: &str) -> Mount {
        MountBuilder::default().destination(destination).typ("bind").source("/x").build().unwrap()
    }

    #[test]
    fn the_deepest_mount_covers_a_path() {
        let mounts = [mount("/"), mount("/data"), mount("/data/logs"), mount("/database")];
        let found = |p: &str| covering_mount(&mounts, Path::new(p)).map(|m| m.destination().display().to_string());
        assert_eq!(found("/data/logs/today"), Some("/data/logs".into()));
        assert_eq!(found("/data/x"), Some("/data".into()));
        assert_eq!(found("/data"), Some("/data".into()));
        assert_eq!(found("/databases"), None);
        assert_eq!(found("/etc/../data/./x"), Some("/data".into()));
        assert_eq!(found("/etc"), None);
    }
}
