//! A running container's network namespace pinned by name while it runs: a bind mount of
//! `/proc/PID/ns/net` at `<state-dir>/netns/<name>`, with `<name>.json` beside it naming the
//! container and its bundle. A bundle made with `--network container:NAME` joins the pinned
//! namespace and shares that bundle's hosts and resolv.conf, as Docker's container network does.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::state::check_component;
use super::Dirs;

/// What the pin records beside the namespace.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pinned {
    /// The container holding the pin.
    pub id: String,
    /// Its bundle directory (holding its hosts, hostname and resolv.conf).
    pub bundle: PathBuf,
    /// The pinned namespace.
    pub netns: PathBuf,
}

fn dir(dirs: &Dirs) -> PathBuf {
    dirs.state_dir.join("netns")
}

/// Pins the network namespace of process `pid` (container `id`, bundle `bundle`) as
/// `name`. A name pinned by another container whose namespace is still there is refused;
/// a stale pin (its container gone without poststop) is replaced.
pub fn pin(dirs: &Dirs, name: &str, id: &str, pid: i64, bundle: &Path) -> Result<()> {
    check_component("container name", name)?;
    let dir = dir(dirs);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    if !available(dirs, name, id)? {
        return Ok(()); // this container holds it already (attached to another network first)
    }
    unpin_files(dirs, name);
    let netns = dir.join(name);
    std::fs::File::create(&netns).with_context(|| format!("cannot create {}", netns.display()))?;
    let source = format!("/proc/{pid}/ns/net");
    bind_mount(&source, &netns).with_context(|| format!("cannot pin {source} at {}", netns.display()))?;
    let record = Pinned { id: id.to_string(), bundle: bundle.to_path_buf(), netns: netns.clone() };
    let path = dir.join(format!("{name}.json"));
    let written = serde_json::to_vec_pretty(&record)
        .map_err(anyhow::Error::from)
        .and_then(|data| std::fs::write(&path, data).with_context(|| format!("cannot write {}", path.display())));
    if written.is_err() {
        unpin_files(dirs, name);
    }
    written
}

/// Whether container `id` may pin `name`: true when it is free, false when `id` holds it
/// already; an error naming the holder when another running container does.
pub fn available(dirs: &Dirs, name: &str, id: &str) -> Result<bool> {
    match pinned(dirs, name)? {
        None => Ok(true),
        Some(existing) if existing.id == id => Ok(false),
        Some(existing) => bail!(
            "the name {name:?} is taken by the running container {} (bundle {}); choose another --name",
            existing.id,
            existing.bundle.display()
        ),
    }
}

/// The live pin of `name`, if any (a record whose namespace is no longer mounted is stale).
pub fn pinned(dirs: &Dirs, name: &str) -> Result<Option<Pinned>> {
    check_component("container name", name)?;
    let path = dir(dirs).join(format!("{name}.json"));
    let data = match std::fs::read(&path) {
        Ok(data) => data,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let record: Pinned =
        serde_json::from_slice(&data).with_context(|| format!("{} is not a pin record", path.display()))?;
    Ok(is_namespace(&record.netns).then_some(record))
}

/// Removes every pin container `id` holds (a poststop hook knows the id, not always the name).
pub fn unpin(dirs: &Dirs, id: &str) -> Result<()> {
    let dir = dir(dirs);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    for entry in entries {
        let path = entry.with_context(|| format!("cannot list {}", dir.display()))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        let holder = std::fs::read(&path).ok().and_then(|data| serde_json::from_slice::<Pinned>(&data).ok());
        if holder.is_some_and(|record| record.id == id) {
            unpin_files(dirs, name);
        }
    }
    Ok(())
}

/// Unmounts and removes a pin's files, whatever state they are in.
fn unpin_files(dirs: &Dirs, name: &str) {
    let netns = dir(dirs).join(name);
    if let Ok(path) = std::ffi::CString::new(netns.as_os_str().as_encoded_bytes()) {
        // SAFETY: a valid path string; a path that is not a mount point only fails.
        unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
    }
    let _ = std::fs::remove_file(&netns);
    let _ = std::fs::remove_file(dir(dirs).join(format!("{name}.json")));
}

/// True when `path` is a mounted network namespace (nsfs).
fn is_namespace(path: &Path) -> bool {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    let Ok(path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else { return false };
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: statfs fills the struct on success.
    if unsafe { libc::statfs(path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: initialised by the successful call.
    unsafe { stat.assume_init() }.f_type == NSFS_MAGIC
}

fn bind_mount(source: &str, target: &Path) -> std::io::Result<()> {
    let source = std::ffi::CString::new(source).map_err(std::io::Error::other)?;
    let target = std::ffi::CString::new(target.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: valid strings; a bind mount takes no data.
    let rc =
        unsafe { libc::mount(source.as_ptr(), target.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
