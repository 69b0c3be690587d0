//! Copy-in of an image's content into a volume (Docker's behaviour for an empty volume):
//! the image directory is found inside the rootfs with every symlink resolved inside it, then
//! walked from held directory descriptors without ever following a symlink below it (the
//! image is hostile input); kinds, owners, modes, xattrs, times and hard links are kept.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::Path;

use anyhow::{bail, Context, Result};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat, Timespec, Timestamps};

/// Copies the contents of the image's directory `path` (absolute, inside `rootfs`) into the
/// directory `dst`, and the directory's own owner, mode, xattrs and times onto `dst`.
/// Returns false, copying nothing, when the image has no directory there.
pub fn copy_image_dir(rootfs: &Path, path: &str, dst: &OwnedFd) -> Result<bool> {
    let root = rustix::fs::open(rootfs, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .with_context(|| format!("cannot open {}", rootfs.display()))?;
    let src = match rustix::fs::openat2(
        &root,
        path.trim_start_matches('/'),
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV,
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("cannot open the image's {path}")),
    };
    let mut copy = Copy { dst_root: rustix::io::dup(dst)?, links: HashMap::new() };
    copy.contents(&src, dst, "", 0).with_context(|| format!("cannot copy the image's {path} into the volume"))?;
    let st = rustix::fs::fstat(&src)?;
    metadata(&src, dst, &st).with_context(|| format!("cannot copy the owner and mode of the image's {path}"))?;
    Ok(true)
}

/// Deepest directory copied: each level holds two descriptors open, so a hostile tree gets
/// this clear refusal rather than running out of them.
const MAX_DEPTH: usize = 256;

struct Copy {
    dst_root: OwnedFd,
    /// First copy of each multiply linked file, by source (device, inode): its path below
    /// `dst_root` (made of directories this copy created, so no symlink on the way).
    links: HashMap<(u64, u64), String>,
}

fn open_beneath(dir: &OwnedFd, name: &str, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat2(
        dir,
        name,
        flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
}

impl Copy {
    /// Copies every entry of `src` into `dst`; `rel` is `dst`'s path below the root, `depth`
    /// its number of parts.
    fn contents(&mut self, src: &OwnedFd, dst: &OwnedFd, rel: &str, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            bail!("{rel} lies more than {MAX_DEPTH} directories deep; refusing to copy further");
        }
        let mut names = Vec::new();
        for entry in rustix::fs::Dir::read_from(src)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name != "." && name != ".." {
                names.push(name);
            }
        }
        for name in names {
            let shown = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
            self.entry(src, dst, &name, &shown, depth).with_context(|| format!("cannot copy {shown}"))?;
        }
        Ok(())
    }

    fn entry(&mut self, src_dir: &OwnedFd, dst_dir: &OwnedFd, name: &str, shown: &str, depth: usize) -> Result<()> {
        let st = rustix::fs::statat(src_dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
        let kind = FileType::from_raw_mode(st.st_mode);
        match kind {
            FileType::Directory | FileType::RegularFile => {
                let flags = if kind == FileType::Directory { OFlags::DIRECTORY } else { OFlags::empty() };
                // Opened without following anything: an entry swapped for a symlink since
                // the stat fails here instead of leading out of the image.
                let src = open_beneath(src_dir, name, flags | OFlags::RDONLY)?;
                let opened = rustix::fs::fstat(&src)?;
                if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino) {
                    bail!("it changed during the copy");
                }
                if kind == FileType::Directory {
                    rustix::fs::mkdirat(dst_dir, name, Mode::from_raw_mode(0o700))?;
                    let dst = open_beneath(dst_dir, name, OFlags::DIRECTORY | OFlags::RDONLY)?;
                    self.contents(&src, &dst, shown, depth + 1)?;
                    return metadata(&src, &dst, &opened);
                }
                let key = (opened.st_dev, opened.st_ino);
                if opened.st_nlink > 1 {
                    if let Some(first) = self.links.get(&key) {
                        rustix::fs::linkat(&self.dst_root, first.as_str(), dst_dir, name, AtFlags::empty())?;
                        return Ok(());
                    }
                    self.links.insert(key, shown.to_string());
                }
                let dst = rustix::fs::openat(
                    dst_dir,
                    name,
                    OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )?;
                let mut reader = std::fs::File::from(src);
                let mut writer = std::fs::File::from(dst);
                std::io::copy(&mut reader, &mut writer)?;
                metadata(&reader.into(), &writer.into(), &opened)
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(src_dir, name, Vec::new())?;
                rustix::fs::symlinkat(target.as_c_str(), dst_dir, name)?;
                rustix::fs::chownat(
                    dst_dir,
                    name,
                    Some(rustix::fs::Uid::from_raw(st.st_uid)),
                    Some(rustix::fs::Gid::from_raw(st.st_gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )?;
                rustix::fs::utimensat(dst_dir, name, &times(&st), AtFlags::SYMLINK_NOFOLLOW)?;
                Ok(())
            }
            FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo => {
                rustix::fs::mknodat(dst_dir, name, kind, Mode::from_raw_mode(0o600), st.st_rdev)?;
                // A node is never a symlink, and this one was just made by us.
                rustix::fs::chownat(
                    dst_dir,
                    name,
                    Some(rustix::fs::Uid::from_raw(st.st_uid)),
                    Some(rustix::fs::Gid::from_raw(st.st_gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )?;
                rustix::fs::chmodat(dst_dir, name, Mode::from_raw_mode(st.st_mode & 0o7777), AtFlags::empty())?;
                rustix::fs::utimensat(dst_dir, name, &times(&st), AtFlags::SYMLINK_NOFOLLOW)?;
                Ok(())
            }
            // A socket is a live endpoint, not content.
            _ => Ok(()),
        }
    }
}

fn times(st: &Stat) -> Timestamps {
    Timestamps {
        last_access: Timespec { tv_sec: st.st_atime, tv_nsec: st.st_atime_nsec as _ },
        last_modification: Timespec { tv_sec: st.st_mtime, tv_nsec: st.st_mtime_nsec as _ },
    }
}

/// Copies owner, mode (after the owner: chown clears set-id bits), xattrs and times from
/// the open `src` onto the open `dst`.
pub fn metadata(src: &OwnedFd, dst: &OwnedFd, st: &Stat) -> Result<()> {
    rustix::fs::fchown(dst, Some(rustix::fs::Uid::from_raw(st.st_uid)), Some(rustix::fs::Gid::from_raw(st.st_gid)))?;
    rustix::fs::fchmod(dst, Mode::from_raw_mode(st.st_mode & 0o7777))?;
    let mut names = vec![0u8; 64 << 10];
    let len = match rustix::fs::flistxattr(src, &mut names[..]) {
        Ok(len) => len,
        Err(rustix::io::Errno::NOTSUP) => 0,
        Err(e) => return Err(e).context("cannot list xattrs"),
    };
    let mut value = vec![0u8; 64 << 10];
    for key in names[..len].split(|b| *b == 0).filter(|k| !k.is_empty()) {
        let key = std::str::from_utf8(key).context("an xattr name is not UTF-8")?;
        // The host's security labels are the host's business, not the image's.
        if key.starts_with("security.") && key != "security.capability" {
            continue;
        }
        let n = rustix::fs::fgetxattr(src, key, &mut value[..]).with_context(|| format!("cannot read xattr {key}"))?;
        rustix::fs::fsetxattr(dst, key, &value[..n], rustix::fs::XattrFlags::empty())
            .with_context(|| format!("cannot set xattr {key}"))?;
    }
    rustix::fs::futimens(dst, &times(st))?;
    Ok(())
}
