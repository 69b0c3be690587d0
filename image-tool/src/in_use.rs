//! Which processes use a bundle's rootfs: those whose root or working directory is the
//! rootfs or lies below it, found by device and inode through `/proc/PID/{root,cwd}` so that
//! processes in other mount namespaces (containers of any runtime) are seen too.
//!
//! How "below" is decided: the bundle's overlay is a superblock of its own, so any directory
//! with the rootfs's device lies inside that overlay, whatever mount or namespace it is seen
//! through. A directory on another device (a container's `/proc`, a volume or any other
//! submount) is walked up with `..`, which crosses from a mount's root to where it is
//! mounted in the process's own mount tree, until it reaches the rootfs (device and inode of
//! its root, or the overlay's device) or a top. The link's text is no help: it reads `/`
//! inside a container. Threads with a private working directory, open files, and processes
//! that even root may not inspect (`/proc/PID/root` denied) are not looked at; a container's
//! init always has its root there, which is what counts.

use std::os::fd::OwnedFd;
use std::path::Path;

use anyhow::{Context, Result};
use rustix::fs::{AtFlags, Mode, OFlags, StatxFlags, CWD};
use rustix::io::Errno;

/// A process found using the tree, and how.
pub struct User {
    pub pid: u32,
    pub command: String,
    /// "root directory" or "working directory".
    pub through: &'static str,
}

/// Device and inode of a directory.
#[derive(PartialEq, Eq, Clone, Copy)]
struct Identity {
    dev: u64,
    ino: u64,
}

/// Most `..` steps taken from one directory; deeper trees are not walked further.
const MAX_DEPTH: usize = 4096;

/// The tree to look for: its top directory, and the device every directory inside it has
/// when it is a mount of its own (the bundle's overlay).
struct Tree {
    top: Identity,
    own_device: Option<u64>,
}

impl Tree {
    fn contains(&self, dir: Identity) -> bool {
        dir == self.top || self.own_device == Some(dir.dev)
    }
}

/// Every process whose root or working directory is `rootfs` or lies below it. Processes
/// that exit during the scan are skipped.
pub fn users(rootfs: &Path) -> Result<Vec<User>> {
    let top = identity_of_path(rootfs).with_context(|| format!("cannot stat {}", rootfs.display()))?;
    let parent = rootfs.parent().unwrap_or(Path::new("/"));
    let parent_dev = identity_of_path(parent).with_context(|| format!("cannot stat {}", parent.display()))?.dev;
    // A rootfs on a device other than its parent's is its own mount: the whole device is it.
    let tree = Tree { top, own_device: (top.dev != parent_dev).then_some(top.dev) };
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").context("cannot list /proc")? {
        let entry = entry.context("cannot list /proc")?;
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        for (link, through) in [("root", "root directory"), ("cwd", "working directory")] {
            match lies_in(&format!("/proc/{pid}/{link}"), &tree) {
                Ok(true) => {
                    let command = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                        .map(|c| c.trim_end().to_string())
                        .unwrap_or_else(|_| "?".into());
                    found.push(User { pid, command, through });
                    break;
                }
                Ok(false) => {}
                // Gone meanwhile (or a zombie, whose links no longer resolve).
                Err(e) if e == Errno::NOENT || e == Errno::SRCH => break,
                // Hidden from root too (an LSM or a non-dumpable process of another user
                // namespace): nothing to compare, and no reason to block every release.
                Err(e) if e == Errno::ACCESS || e == Errno::PERM => break,
                Err(e) => {
                    return Err(std::io::Error::from(e)).with_context(|| format!("cannot inspect /proc/{pid}/{link}"))
                }
            }
        }
    }
    Ok(found)
}

/// Whether the directory `link` resolves to is in `tree`, itself or by walking up.
fn lies_in(link: &str, tree: &Tree) -> rustix::io::Result<bool> {
    let mut dir = open_dir(CWD, link)?;
    let mut here = identity(&dir)?;
    for _ in 0..MAX_DEPTH {
        if tree.contains(here) {
            return Ok(true);
        }
        let parent = open_dir(&dir, "..")?;
        let up = identity(&parent)?;
        if up == here {
            return Ok(false); // a root: the process's mount tree ends here
        }
        (dir, here) = (parent, up);
    }
    Ok(false)
}

fn open_dir<Fd: rustix::fd::AsFd>(at: Fd, path: &str) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(at, path, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
}

/// Device and inode from the attributes the kernel has cached, so a hung network or FUSE
/// mount in some other process's path cannot stall the scan.
fn identity(dir: &OwnedFd) -> rustix::io::Result<Identity> {
    let st = rustix::fs::statx(dir, "", AtFlags::EMPTY_PATH | AtFlags::STATX_DONT_SYNC, StatxFlags::INO)?;
    Ok(Identity { dev: rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor), ino: st.stx_ino })
}

fn identity_of_path(path: &Path) -> std::io::Result<Identity> {
    let dir = rustix::fs::openat(CWD, path, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
    Ok(identity(&dir)?)
}
