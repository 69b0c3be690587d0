//! Applying one layer blob to an empty directory, safely: decompression (tar, multi-member
//! gzip, zstd), the DiffID of the uncompressed stream, and every filesystem write made
//! relative to a held directory descriptor, never through a symlink, never outside.
//!
//! Whiteouts become overlay whiteouts (0/0 character devices), opaque markers become
//! `trusted.overlay.opaque=y`; overlay xattrs carried in the layer are escaped
//! (`trusted.overlay.X` is stored as `trusted.overlay.overlay.X`, which overlayfs shows as
//! plain data), so a layer can never steer the overlay mount.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use anyhow::{bail, Context, Result};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps};
use sha2::{Digest as _, Sha256};

use crate::digest::Digest;

/// Limits on what one layer may expand to; a layer past them is refused.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_bytes: u64,
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_bytes: DEFAULT_MAX_BYTES, max_entries: DEFAULT_MAX_ENTRIES }
    }
}

/// Uncompressed bytes one layer may hold (64 GiB).
pub const DEFAULT_MAX_BYTES: u64 = 64 << 30;
/// Entries one layer may hold.
pub const DEFAULT_MAX_ENTRIES: u64 = 4_000_000;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// A reader that hashes what passes through it and stops at the byte cap.
struct Counting<R> {
    inner: R,
    hasher: Sha256,
    total: u64,
    cap: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.total += n as u64;
        if self.total > self.cap {
            return Err(io::Error::other(format!(
                "the layer expands past the {}-byte limit (--max-layer-bytes)",
                self.cap
            )));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The decompressed stream of a layer blob, by its leading magic bytes.
fn decompressed(blob: File) -> Result<Box<dyn Read + Send>> {
    let mut reader = BufReader::with_capacity(1 << 20, blob);
    let head = {
        use std::io::BufRead;
        reader.fill_buf().context("cannot read the layer")?.to_vec()
    };
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(reader))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(reader).context("cannot start zstd decompression")?)
    } else {
        Box::new(reader)
    })
}

/// Extracts the layer blob at `blob` into the empty directory `dir`; returns its DiffID
/// (the digest of the uncompressed tar), which the caller checks before using `dir`.
pub fn extract(blob: &Path, dir: &Path, limits: Limits) -> Result<Digest> {
    let file = File::open(blob).with_context(|| format!("cannot open layer {}", blob.display()))?;
    let stream = Counting { inner: decompressed(file)?, hasher: Sha256::new(), total: 0, cap: limits.max_bytes };
    let root = rustix::fs::open(dir, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .with_context(|| format!("cannot open {}", dir.display()))?;
    let writer = Writer { root, purpose: Purpose::Layer, dir_times: Vec::new() };
    // Pipelined: one thread decompresses and hashes while this one parses and writes.
    let (chunks, received) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(PIPELINE_DEPTH);
    std::thread::scope(|scope| {
        let producer = scope.spawn(move || decompress_into(stream, chunks));
        let written = apply_all(ChunkReader { chunks: received, current: Vec::new(), at: 0 }, writer, limits);
        let hashed = producer.join().map_err(|_| anyhow::anyhow!("the decompression thread panicked"))?;
        written?;
        let hash = hashed.context("cannot read the layer")?;
        Digest::parse(&format!("sha256:{}", hex::encode(hash)))
    })
}

/// Decompressed chunks in flight between the two threads of one extraction.
const PIPELINE_DEPTH: usize = 8;
const CHUNK: usize = 1 << 20;

/// Reads the whole decompressed stream into `chunks`; returns its sha256 once it is all read.
fn decompress_into<R: Read>(
    mut stream: Counting<R>,
    chunks: std::sync::mpsc::SyncSender<io::Result<Vec<u8>>>,
) -> io::Result<[u8; 32]> {
    loop {
        let mut buf = vec![0u8; CHUNK];
        match stream.read(&mut buf) {
            Ok(0) => return Ok(stream.hasher.finalize().into()),
            Ok(n) => {
                buf.truncate(n);
                if chunks.send(Ok(buf)).is_err() {
                    return Err(io::Error::other("extraction stopped"));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let message = e.to_string();
                let _ = chunks.send(Err(e));
                return Err(io::Error::other(message));
            }
        }
    }
}

/// The receiving end of the pipeline as a reader.
struct ChunkReader {
    chunks: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    at: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.current.len() {
            match self.chunks.recv() {
                Ok(chunk) => {
                    self.current = chunk?;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Applies every entry of the tar stream, then reads it to the end (the DiffID covers the
/// padding after the end-of-archive blocks too).
fn apply_all<R: Read>(mut stream: R, mut writer: Writer, limits: Limits) -> Result<()> {
    let noun = writer.purpose.noun();
    {
        let mut archive = tar::Archive::new(&mut stream);
        let mut entries = 0u64;
        for entry in archive.entries().with_context(|| format!("the {noun} is not a tar archive"))? {
            let mut entry = entry.with_context(|| format!("the {noun}'s tar stream is corrupt"))?;
            entries += 1;
            if entries > limits.max_entries {
                bail!("the {noun} has more than {} entries (--max-layer-entries)", limits.max_entries);
            }
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            writer.apply(&mut entry).with_context(|| format!("{noun} entry {name:?}"))?;
        }
    }
    io::copy(&mut stream, &mut io::sink()).with_context(|| format!("cannot read the end of the {noun}"))?;
    writer.finish()
}

/// A path inside the layer split into its components; `..` is refused and a leading `/`
/// or `./` is dropped, so every name stays below the layer's root.
fn components(raw: &str) -> Result<Vec<&str>> {
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => continue,
            ".." => bail!("the path {raw:?} climbs out of the layer with `..`; refusing the layer"),
            other => parts.push(other),
        }
    }
    Ok(parts)
}

/// Extracts a tar stream that `berth-image cp` copies into `dir` (opened by the caller, who
/// resolved it): entries are plain files (no whiteouts), written below `dir` with the same
/// care as a layer's; `owner` replaces every entry's owner unless None (`cp -a`).
/// `unprivileged` (a copy out of a container onto the host, without `-a`) leaves device
/// nodes out and drops setuid and setgid bits, so a container cannot plant them on the host.
pub fn apply_copy(stream: impl Read, dir: OwnedFd, owner: Option<(u32, u32)>, unprivileged: bool) -> Result<()> {
    let purpose = Purpose::Copy { owner, unprivileged };
    apply_all(stream, Writer { root: dir, purpose, dir_times: Vec::new() }, Limits::default())
}

/// What a tar stream is: an image layer (whiteouts, its own owners) or a copy.
enum Purpose {
    Layer,
    Copy { owner: Option<(u32, u32)>, unprivileged: bool },
}

impl Purpose {
    fn noun(&self) -> &'static str {
        match self {
            Purpose::Layer => "layer",
            Purpose::Copy { .. } => "archive",
        }
    }
}

struct Writer {
    root: OwnedFd,
    purpose: Purpose,
    /// Directories whose times are set last (adding entries changes them).
    dir_times: Vec<(Vec<String>, Timestamps)>,
}

impl Writer {
    /// Opens the directory `parts` below the root, creating missing ones, never following
    /// a symlink (a layer cannot redirect writes through one of its own).
    fn dir(&self, parts: &[&str]) -> Result<OwnedFd> {
        let mut fd = rustix::io::dup(&self.root)?;
        for part in parts {
            let opened = rustix::fs::openat2(
                &fd,
                *part,
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
            );
            fd = match opened {
                Ok(next) => next,
                Err(rustix::io::Errno::NOENT) => {
                    rustix::fs::mkdirat(&fd, *part, Mode::from_raw_mode(0o755))
                        .with_context(|| format!("cannot create directory {part:?}"))?;
                    rustix::fs::openat2(
                        &fd,
                        *part,
                        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                        Mode::empty(),
                        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
                    )?
                }
                Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR | rustix::io::Errno::XDEV) => {
                    bail!("the parent directory {part:?} is a symlink or not a directory here; refusing to write through it")
                }
                Err(e) => return Err(e).with_context(|| format!("cannot open directory {part:?}")),
            };
        }
        Ok(fd)
    }

    /// Removes whatever `name` is in `parent`, so the entry replaces it (later wins).
    fn clear(parent: &OwnedFd, name: &str, keep_dir: bool) -> Result<()> {
        match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                if !keep_dir {
                    remove_tree(parent, name)?;
                }
            }
            Ok(_) => rustix::fs::unlinkat(parent, name, AtFlags::empty())?,
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<R>) -> Result<()> {
        let raw = String::from_utf8(entry.path_bytes().into_owned()).context("the entry's name is not UTF-8")?;
        let parts = components(&raw)?;
        let Some((name, parent_parts)) = parts.split_last() else { return Ok(()) }; // the root itself
        let parent = self.dir(parent_parts)?;
        if matches!(self.purpose, Purpose::Layer) {
            if let Some(whiteout) = Self::whiteout(&parent, name, &raw) {
                return whiteout;
            }
        }
        let header = entry.header().clone();
        let kind = header.entry_type();
        let unprivileged = matches!(self.purpose, Purpose::Copy { unprivileged: true, .. });
        let mode_bits = header.mode().context("bad mode")? & if unprivileged { 0o1777 } else { 0o7777 };
        let mode = Mode::from_raw_mode(mode_bits);
        if unprivileged && matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
            return Ok(()); // device nodes stay in the container
        }
        let (uid, gid) = match self.purpose {
            Purpose::Copy { owner: Some(owner), .. } => owner,
            _ => (header.uid().context("bad uid")? as u32, header.gid().context("bad gid")? as u32),
        };
        let mtime = header.mtime().unwrap_or(0) as i64;
        match kind {
            tar::EntryType::Directory => {
                Self::clear(&parent, name, true)?;
                if let Err(e) = rustix::fs::mkdirat(&parent, *name, mode) {
                    if e != rustix::io::Errno::EXIST {
                        return Err(e).context("cannot create the directory");
                    }
                }
                let owned: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
                self.dir_times.push((owned, stamp(mtime)));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                Self::clear(&parent, name, false)?;
                let fd = rustix::fs::openat2(
                    &parent,
                    *name,
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
                )
                .context("cannot create the file")?;
                let mut file = File::from(fd);
                io::copy(entry, &mut file).context("cannot write the file")?;
                file.flush()?;
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name_bytes().context("symlink without a target")?;
                Self::clear(&parent, name, false)?;
                rustix::fs::symlinkat(target.as_ref(), &parent, *name).context("cannot create the symlink")?;
            }
            tar::EntryType::Link => {
                let target = entry.link_name_bytes().context("hardlink without a target")?;
                let target = String::from_utf8(target.into_owned()).context("the hardlink target is not UTF-8")?;
                let target_parts = components(&target)?;
                let Some((target_name, target_dirs)) = target_parts.split_last() else {
                    bail!("hardlink to the layer's root")
                };
                let target_parent = self.dir(target_dirs)?;
                // Only an entry this layer already wrote: nothing outside the layer exists here.
                let st = rustix::fs::statat(&target_parent, *target_name, AtFlags::SYMLINK_NOFOLLOW)
                    .with_context(|| format!("hardlink target {target:?} is not in this layer"))?;
                if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    bail!("hardlink to the directory {target:?}");
                }
                Self::clear(&parent, name, false)?;
                rustix::fs::linkat(&target_parent, *target_name, &parent, *name, AtFlags::empty())
                    .context("cannot create the hardlink")?;
                return Ok(()); // the link shares its target's metadata
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let (major, minor) = (header.device_major()?.unwrap_or(0), header.device_minor()?.unwrap_or(0));
                let file_type = match kind {
                    tar::EntryType::Char if major == 0 && minor == 0 => {
                        bail!("a 0/0 character device would read as an overlay whiteout; refusing it")
                    }
                    tar::EntryType::Char => FileType::CharacterDevice,
                    tar::EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                Self::clear(&parent, name, false)?;
                rustix::fs::mknodat(&parent, *name, file_type, mode, rustix::fs::makedev(major, minor))
                    .context("cannot create the device node")?;
            }
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => return Ok(()),
            other => bail!("unsupported tar entry type {other:?}"),
        }
        // Owner first: chown clears setuid and setgid, which the mode then restores.
        rustix::fs::chownat(
            &parent,
            *name,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .context("cannot set the owner")?;
        if kind != tar::EntryType::Symlink {
            chmod_no_follow(&parent, name, mode)?;
        }
        if let Some(extensions) = entry.pax_extensions()? {
            for extension in extensions {
                let extension = extension?;
                let Some(key) = extension.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) else { continue };
                set_xattr(&parent, name, &escape_xattr(key), extension.value_bytes())?;
            }
        }
        if kind != tar::EntryType::Directory {
            rustix::fs::utimensat(&parent, *name, &stamp(mtime), AtFlags::SYMLINK_NOFOLLOW)
                .context("cannot set the times")?;
        }
        Ok(())
    }

    /// Applies a layer's opaque marker or whiteout named `name`; None for any other name.
    fn whiteout(parent: &OwnedFd, name: &str, raw: &str) -> Option<Result<()>> {
        if name == OPAQUE_MARKER {
            return Some(set_xattr(parent, ".", "trusted.overlay.opaque", b"y"));
        }
        let hidden = name.strip_prefix(WHITEOUT_PREFIX)?;
        if hidden.is_empty() || hidden == "." || hidden == ".." {
            return Some(Err(anyhow::anyhow!("malformed whiteout {raw:?}")));
        }
        Some(Self::clear(parent, hidden, false).and_then(|()| {
            rustix::fs::mknodat(parent, hidden, FileType::CharacterDevice, Mode::empty(), 0)
                .with_context(|| format!("cannot create the whiteout for {hidden:?}"))
        }))
    }

    /// Sets directories' times, deepest first, once nothing more is added to them.
    fn finish(mut self) -> Result<()> {
        self.dir_times.sort_by_key(|(parts, _)| std::cmp::Reverse(parts.len()));
        for (parts, times) in &self.dir_times {
            let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
            let (name, parents) = parts.split_last().unwrap();
            let parent = self.dir(parents)?;
            rustix::fs::utimensat(&parent, *name, times, AtFlags::SYMLINK_NOFOLLOW)?;
        }
        Ok(())
    }
}

/// Sets the mode of `name` in `parent` unless it is (now) a symlink: chmod follows links,
/// and something else (a running container, for `cp`) may have swapped one in since the
/// entry was made. The mode goes to the inode opened without following anything.
fn chmod_no_follow(parent: &OwnedFd, name: &str, mode: Mode) -> Result<()> {
    let fd = rustix::fs::openat(parent, name, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
        .with_context(|| format!("cannot open {name:?} to set its mode"))?;
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
        bail!("{name:?} was replaced by a symlink while it was written; refusing to follow it");
    }
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    rustix::fs::chmod(path.as_str(), mode).context("cannot set the mode")
}

/// Access and modification time both set to the entry's mtime.
fn stamp(mtime: i64) -> Timestamps {
    let at = Timespec { tv_sec: mtime, tv_nsec: 0 };
    Timestamps { last_access: at, last_modification: at }
}

/// Overlay's own xattrs from a layer are stored escaped, so overlayfs shows them as data
/// and never acts on them.
fn escape_xattr(key: &str) -> String {
    for prefix in ["trusted.overlay.", "user.overlay."] {
        if let Some(rest) = key.strip_prefix(prefix) {
            return format!("{prefix}overlay.{rest}");
        }
    }
    key.to_string()
}

/// Sets an xattr on `name` in `parent` without following a final symlink.
fn set_xattr(parent: &OwnedFd, name: &str, key: &str, value: &[u8]) -> Result<()> {
    let path = format!("/proc/self/fd/{}/{}", parent.as_fd().as_raw_fd(), name);
    rustix::fs::lsetxattr(path.as_str(), key, value, rustix::fs::XattrFlags::empty())
        .with_context(|| format!("cannot set xattr {key}"))
}

/// Removes `name` in `parent` and everything below it, without following symlinks.
fn remove_tree(parent: &OwnedFd, name: &str) -> Result<()> {
    let dir = rustix::fs::openat2(
        parent,
        name,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
    )?;
    let mut children: HashMap<String, bool> = HashMap::new();
    for entry in rustix::fs::Dir::read_from(&dir)? {
        let entry = entry?;
        let child = entry.file_name().to_string_lossy().into_owned();
        if child != "." && child != ".." {
            children.insert(child, entry.file_type() == FileType::Directory);
        }
    }
    for (child, is_dir) in children {
        if is_dir {
            remove_tree(&dir, &child)?;
        } else {
            rustix::fs::unlinkat(&dir, child.as_str(), AtFlags::empty())?;
        }
    }
    rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_inside_the_layer() {
        assert_eq!(components("/etc/passwd").unwrap(), vec!["etc", "passwd"]);
        assert_eq!(components("./a//b/.").unwrap(), vec!["a", "b"]);
        assert!(components("a/../../etc").is_err());
    }

    #[test]
    fn overlay_xattrs_are_escaped() {
        assert_eq!(escape_xattr("trusted.overlay.opaque"), "trusted.overlay.overlay.opaque");
        assert_eq!(escape_xattr("user.overlay.redirect"), "user.overlay.overlay.redirect");
        assert_eq!(escape_xattr("security.capability"), "security.capability");
    }
}
