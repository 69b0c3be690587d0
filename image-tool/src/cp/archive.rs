//! The tar stream `cp` makes of a file or directory tree: walked from held directory
//! descriptors, never through a symlink below the named path (one swapped in during the walk
//! fails the copy instead of being followed), contents read from the descriptor that was
//! checked. Hard links are written as separate files.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use anyhow::{bail, Context, Result};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat};

use super::Place;

/// Writes `from` (its target when `follow` and it is a symlink) as a tar stream named `top`;
/// with an empty `top` a directory's entries go at the top level (`DIR/.`).
pub fn write(from: &Place, follow: bool, top: &str, out: &mut impl Write) -> Result<()> {
    let nofollow = if follow { OFlags::empty() } else { OFlags::NOFOLLOW };
    let mut builder = tar::Builder::new(out);
    let probe =
        from.open(OFlags::PATH | OFlags::CLOEXEC | nofollow).with_context(|| format!("cannot open {}", from.shown))?;
    let st = rustix::fs::fstat(&probe)?;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Symlink => {
            let target = rustix::fs::readlinkat(&probe, "", Vec::new())?;
            let mut header = header(&st, tar::EntryType::Symlink);
            builder.append_link(&mut header, top, target.to_string_lossy().as_ref())?;
        }
        FileType::Directory | FileType::RegularFile => {
            let fd = from
                .open(OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | nofollow)
                .with_context(|| format!("cannot open {}", from.shown))?;
            let opened = rustix::fs::fstat(&fd)?;
            if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino) {
                bail!("{} changed while it was opened; try again", from.shown);
            }
            entry(&mut builder, Some(&fd), &opened, top)?;
        }
        _ => entry(&mut builder, None, &st, top)?,
    }
    builder.into_inner().context("cannot finish the archive")?;
    Ok(())
}

/// Appends one entry named `path` (and, for a directory, everything below it); `fd` is
/// the opened directory or file, None for other kinds, which are never opened.
fn entry<W: Write>(builder: &mut tar::Builder<W>, fd: Option<&OwnedFd>, st: &Stat, path: &str) -> Result<()> {
    match (FileType::from_raw_mode(st.st_mode), fd) {
        (FileType::Directory, Some(fd)) => {
            if !path.is_empty() {
                let mut header = header(st, tar::EntryType::Directory);
                builder.append_data(&mut header, format!("{path}/"), std::io::empty())?;
            }
            directory(builder, fd, path)
        }
        (FileType::RegularFile, Some(fd)) => {
            let mut header = header(st, tar::EntryType::Regular);
            header.set_size(st.st_size as u64);
            let mut contents = std::fs::File::from(rustix::io::dup(fd)?).take(st.st_size as u64);
            builder.append_data(&mut header, path, &mut contents).with_context(|| format!("cannot read {path}"))?;
            if contents.limit() != 0 {
                bail!("{path} shrank while it was copied");
            }
            Ok(())
        }
        (kind @ (FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo), _) => {
            let entry_type = match kind {
                FileType::CharacterDevice => tar::EntryType::Char,
                FileType::BlockDevice => tar::EntryType::Block,
                _ => tar::EntryType::Fifo,
            };
            let mut header = header(st, entry_type);
            header.set_device_major(rustix::fs::major(st.st_rdev))?;
            header.set_device_minor(rustix::fs::minor(st.st_rdev))?;
            builder.append_data(&mut header, path, std::io::empty())?;
            Ok(())
        }
        // Sockets have no place in an archive.
        _ => Ok(()),
    }
}

/// Appends the entries of the open directory `dir`, named below `path`.
fn directory<W: Write>(builder: &mut tar::Builder<W>, dir: &OwnedFd, path: &str) -> Result<()> {
    let mut names: Vec<String> = Vec::new();
    for child in rustix::fs::Dir::read_from(dir).with_context(|| format!("cannot list {path}"))? {
        let child = child?;
        let name = child.file_name().to_string_lossy().into_owned();
        if name != "." && name != ".." {
            names.push(name);
        }
    }
    names.sort();
    for name in names {
        let shown = if path.is_empty() { name.clone() } else { format!("{path}/{name}") };
        let st = rustix::fs::statat(dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
            .with_context(|| format!("cannot stat {shown}"))?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(dir, name.as_str(), Vec::new())?;
                let mut header = header(&st, tar::EntryType::Symlink);
                builder.append_link(&mut header, &shown, target.to_string_lossy().as_ref())?;
            }
            kind @ (FileType::Directory | FileType::RegularFile) => {
                // Opened without following anything: an entry replaced by a symlink since
                // the stat fails here rather than leading elsewhere.
                let child = rustix::fs::openat2(
                    dir,
                    name.as_str(),
                    // Non-blocking: a FIFO swapped in since the stat must not hang the copy.
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
                    Mode::empty(),
                    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
                )
                .with_context(|| format!("cannot open {shown} (did it change during the copy?)"))?;
                let opened = rustix::fs::fstat(&child)?;
                if FileType::from_raw_mode(opened.st_mode) != kind {
                    bail!("{shown} changed during the copy");
                }
                entry(builder, Some(&child), &opened, &shown)?;
            }
            _ => entry(builder, None, &st, &shown)?,
        }
    }
    Ok(())
}

/// A header with the entry's mode, owner and modification time.
fn header(st: &Stat, kind: tar::EntryType) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(st.st_mode & 0o7777);
    header.set_uid(st.st_uid as u64);
    header.set_gid(st.st_gid as u64);
    header.set_mtime(st.st_mtime.max(0) as u64);
    header.set_size(0);
    header
}
