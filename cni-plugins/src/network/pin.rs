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
    /// The container's process: the pin is live while its namespace is still the pinned one
    /// (the pin itself keeps a namespace alive, so a container gone without its poststop
    /// hook would otherwise hold the name for ever).
    pub pid: i64,
}

fn dir(dirs: &Dirs) -> PathBuf {
    dirs.state_dir.join("netns")
}

/// Pins the network namespace of process `pid` (container `id`, bundle `bundle`) as
/// `name`. A name pinned by another container whose namespace is still there is refused;
/// a stale pin (its container gone without poststop) is replaced.
pub fn pin(dirs: &Dirs, name: &str, id: &str, pid: i64, bundle: &Path) -> Result<()> {
    check_component("container name", name)?;
    let _lock = super::state::lock(dirs)?;
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
    let record = Pinned { id: id.to_string(), bundle: bundle.to_path_buf(), netns: netns.clone(), pid };
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

/// The live pin of `name`, if any; a stale one (its container gone) is removed.
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
    if same_namespace(&record.netns, &format!("/proc/{}/ns/net", record.pid)) {
        return Ok(Some(record));
    }
    // Its container is gone (or the pid is another process's now): the pin is stale.
    unpin_files(dirs, name);
    Ok(None)
}

/// Removes every pin container `id` holds (a poststop hook knows the id, not always the name).
pub fn unpin(dirs: &Dirs, id: &str) -> Result<()> {
    let _lock = super::state::lock(dirs)?;
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

/// True when the pin and the process's namespace link are one namespace (same nsfs inode).
fn same_namespace(pin: &Path, process: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(pin), std::fs::metadata(process)) {
        (Ok(pinned), Ok(current)) => (pinned.dev(), pinned.ino()) == (current.dev(), current.ino()),
        _ => false,
    }
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
