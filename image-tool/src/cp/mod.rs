//! `berth-image cp`: files, directories and tar streams copied into and out of a bundle's
//! container with Docker's naming rules. Both ends are a directory descriptor and a path
//! resolved below it with openat2 `RESOLVE_IN_ROOT` (the host's end from `/`), so a symlink in
//! the container, even one swapped in during the copy, never leads outside the container.

pub mod archive;
pub mod container_root;

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};

/// `-a` and `-L`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Keep the owners of what is copied (otherwise root in the container, the caller on the host).
    pub archive: bool,
    /// Copy what a symlink named as SRC points to, not the link.
    pub follow_link: bool,
}

/// One side of a copy as written on the command line.
#[derive(Debug, PartialEq, Eq)]
pub enum Endpoint {
    Host(PathBuf),
    /// `-`: a tar stream on stdin or stdout.
    Stream,
    Container {
        bundle: PathBuf,
        path: String,
    },
}

/// `BUNDLE:PATH` when the part before the first `:` is a bundle directory (it holds
/// config.json); `-` for a stream; anything else is a host path (write `./a:b` for a host
/// file whose name has a colon, as with Docker).
pub fn endpoint(arg: &str) -> Endpoint {
    if arg == "-" {
        return Endpoint::Stream;
    }
    if let Some((bundle, path)) = arg.split_once(':') {
        if !bundle.is_empty() && Path::new(bundle).join("config.json").is_file() {
            return Endpoint::Container { bundle: PathBuf::from(bundle), path: path.to_string() };
        }
    }
    Endpoint::Host(PathBuf::from(arg))
}

/// A path below a directory descriptor, and how to name it in errors.
pub struct Place {
    pub root: OwnedFd,
    /// Relative to `root`; empty for the root itself.
    pub path: PathBuf,
    /// As the user wrote it.
    pub shown: String,
    pub read_only: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Directory,
    Other,
}

impl Place {
    fn host(arg: &Path) -> Result<Place> {
        let absolute = if arg.is_absolute() {
            arg.to_path_buf()
        } else {
            std::env::current_dir().context("cannot read the current directory")?.join(arg)
        };
        let root = rustix::fs::open("/", OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .context("cannot open /")?;
        Ok(Place {
            root,
            path: relative(&absolute.to_string_lossy()),
            shown: arg.display().to_string(),
            read_only: false,
        })
    }

    /// What the path is, following a final symlink when `follow`; None when nothing is there.
    pub fn kind(&self, follow: bool) -> Result<Option<Kind>> {
        let flags = OFlags::PATH | OFlags::CLOEXEC | if follow { OFlags::empty() } else { OFlags::NOFOLLOW };
        match self.open(flags) {
            Ok(fd) => {
                let st = rustix::fs::fstat(&fd).with_context(|| format!("cannot stat {}", self.shown))?;
                Ok(Some(match FileType::from_raw_mode(st.st_mode) {
                    FileType::Directory => Kind::Directory,
                    _ => Kind::Other,
                }))
            }
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot open {}", self.shown)),
        }
    }

    /// Opens the path below the root; every symlink resolves as if the root were `/`.
    pub fn open(&self, flags: OFlags) -> rustix::io::Result<OwnedFd> {
        open_in_root(&self.root, &self.path, flags)
    }

    /// The directory holding the path, and the path's last name.
    fn parent_and_name(&self) -> Result<(Place, String)> {
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned());
        let Some(name) = name else { bail!("{} names no file or directory", self.shown) };
        let parent = self.path.parent().unwrap_or(Path::new("")).to_path_buf();
        let root = rustix::io::dup(&self.root)?;
        Ok((
            Place { root, path: parent, shown: format!("the directory of {}", self.shown), read_only: self.read_only },
            name,
        ))
    }
}

/// Opens `path` below `root` with `RESOLVE_IN_ROOT`: `..` stops at the root and absolute
/// symlinks start from it.
pub fn open_in_root(root: &OwnedFd, path: &Path, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let path = if path.as_os_str().is_empty() { Path::new(".") } else { path };
    rustix::fs::openat2(root, path, flags, Mode::empty(), ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS)
}

/// A path made relative (leading `/` dropped); `..` is left to `RESOLVE_IN_ROOT`.
fn relative(path: &str) -> PathBuf {
    PathBuf::from(path.trim_start_matches('/'))
}

/// Runs `berth-image cp SRC DST`.
pub fn copy(src: &str, dst: &str, options: Options, stdin: impl Read, stdout: impl Write) -> Result<()> {
    let (source, target) = (endpoint(src), endpoint(dst));
    match (&source, &target) {
        (Endpoint::Container { .. }, Endpoint::Container { .. }) => {
            bail!("both {src} and {dst} are in containers; copy out to the host first, then in")
        }
        (Endpoint::Container { .. }, _) | (_, Endpoint::Container { .. }) => {}
        _ => bail!("one of SRC and DST must be BUNDLE:PATH (a bundle directory holding config.json)"),
    }
    let into_container = matches!(target, Endpoint::Container { .. });
    // Docker's owners: root in the container, the caller on the host; `-a` keeps the source's.
    let owner = match (options.archive, into_container) {
        (true, _) => None,
        (false, true) => Some((0, 0)),
        // SAFETY: geteuid and getegid have no preconditions.
        (false, false) => Some(unsafe { (libc::geteuid(), libc::getegid()) }),
    };
    let place = |end: &Endpoint, arg: &str| -> Result<Place> {
        match end {
            Endpoint::Host(path) => Place::host(path),
            Endpoint::Container { bundle, path } => container_root::resolve(bundle, path, arg),
            Endpoint::Stream => unreachable!("streams are handled before"),
        }
    };
    match (&source, &target) {
        (Endpoint::Stream, _) => {
            let to = place(&target, dst)?;
            refuse_read_only(&to)?;
            if to.kind(true)? != Some(Kind::Directory) {
                bail!("{dst} is not an existing directory; a tar stream is extracted into one");
            }
            let dir = to.open(OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC)?;
            crate::extract::apply_copy(stdin, dir, owner, false)
                .with_context(|| format!("cannot extract stdin into {dst}"))
        }
        (_, Endpoint::Stream) => {
            let from = place(&source, src)?;
            let name = source_name(&from, user_path(&source))?;
            let mut out = stdout;
            archive::write(&from, options.follow_link, name.as_deref().unwrap_or(""), &mut out)?;
            out.flush().context("cannot write the archive to stdout")
        }
        _ => {
            let (from, to) = (place(&source, src)?, place(&target, dst)?);
            // Out of a container onto the host without -a: no device nodes, no setuid bits.
            let unprivileged = !into_container && !options.archive;
            let name = source_name(&from, user_path(&source))?;
            copy_between(&from, src, name, &to, dst, options.follow_link, owner, unprivileged)
        }
    }
}

/// The name the source takes in the archive: the last name of `path` as the user wrote it
/// (`..` taken into account), or None for `DIR/.` and `/` (their contents). Fails when
/// nothing is there.
fn source_name(from: &Place, path: &str) -> Result<Option<String>> {
    if from.kind(false)?.is_none() {
        bail!("{}: no such file or directory", from.shown);
    }
    if path.ends_with("/.") || path == "." {
        return Ok(None);
    }
    let mut names = Vec::new();
    for component in Path::new(path).components() {
        match component {
            std::path::Component::Normal(name) => names.push(name.to_string_lossy().into_owned()),
            std::path::Component::ParentDir => {
                names.pop();
            }
            _ => {}
        }
    }
    Ok(names.pop())
}

/// The path part of an endpoint as the user wrote it.
fn user_path(end: &Endpoint) -> &str {
    match end {
        Endpoint::Host(path) => path.to_str().unwrap_or(""),
        Endpoint::Container { path, .. } => path,
        Endpoint::Stream => "",
    }
}

/// Docker's rules: into an existing directory under the source's name (its contents for
/// `SRC/.`); onto a missing path or an existing file under that path's name.
#[allow(clippy::too_many_arguments)] // one call site; the options travel together
fn copy_between(
    from: &Place,
    src: &str,
    name: Option<String>,
    to: &Place,
    dst: &str,
    follow: bool,
    owner: Option<(u32, u32)>,
    unprivileged: bool,
) -> Result<()> {
    let source_kind = from.kind(follow)?.with_context(|| format!("{src}: no such file or directory"))?;
    refuse_read_only(to)?;
    let (dir, top) = match (source_kind, to.kind(true)?) {
        (_, Some(Kind::Directory)) => (rustix::io::dup(&to.root).map(|root| (root, to.path.clone()))?, name),
        (Kind::Directory, Some(Kind::Other)) => bail!("cannot copy the directory {src} onto the file {dst}"),
        (_, found) => {
            if found.is_none() && dst.ends_with('/') {
                bail!("the destination directory {dst} does not exist");
            }
            let (parent, last) = to.parent_and_name()?;
            if parent.kind(true)? != Some(Kind::Directory) {
                bail!("the parent directory of {dst} does not exist");
            }
            ((parent.root, parent.path), Some(last))
        }
    };
    let dir = open_in_root(&dir.0, &dir.1, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC)
        .with_context(|| format!("cannot open the destination of {dst}"))?;
    let (reader, mut writer) = std::io::pipe().context("cannot make a pipe")?;
    std::thread::scope(|scope| {
        let producer = scope.spawn(move || archive::write(from, follow, top.as_deref().unwrap_or(""), &mut writer));
        let extracted = crate::extract::apply_copy(reader, dir, owner, unprivileged);
        let archived = producer.join().map_err(|_| anyhow::anyhow!("the archiving thread panicked"))?;
        archived.with_context(|| format!("cannot read {src}"))?;
        extracted.with_context(|| format!("cannot write {dst}"))
    })
}

fn refuse_read_only(to: &Place) -> Result<()> {
    if to.read_only {
        bail!("{} lies on a read-only mount; nothing is copied into it", to.shown);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_told_apart() {
        let bundle = std::env::temp_dir().join(format!("berth-cp-endpoint-{}", std::process::id()));
        std::fs::create_dir_all(&bundle).unwrap();
        std::fs::write(bundle.join("config.json"), "{}").unwrap();
        let arg = format!("{}:/etc/hosts", bundle.display());
        assert_eq!(endpoint(&arg), Endpoint::Container { bundle: bundle.clone(), path: "/etc/hosts".into() });
        assert_eq!(endpoint("-"), Endpoint::Stream);
        assert_eq!(endpoint("./a:b"), Endpoint::Host("./a:b".into()));
        assert_eq!(endpoint("/no/such/bundle:/x"), Endpoint::Host("/no/such/bundle:/x".into()));
        std::fs::remove_dir_all(&bundle).unwrap();
    }
}
