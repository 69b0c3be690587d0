//! berth-cni's state dir: one lock serializing every change (attachments, hosts files,
//! network creation), and a record per attachment
//! (`attachments/<network>/<container id>-<ifname>.json`) holding the ADD's result and the
//! config it ran with, so DEL gets its prevResult as libcni's cache gives it.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::publish::PortMapping;
use super::Dirs;

/// The state dir's lock, held until dropped.
pub struct StateLock {
    _file: File,
}

/// Takes the state dir's lock, waiting for other berth-cni calls.
pub fn lock(dirs: &Dirs) -> Result<StateLock> {
    std::fs::create_dir_all(&dirs.state_dir)
        .with_context(|| format!("cannot create state dir {}", dirs.state_dir.display()))?;
    let path = dirs.state_dir.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open lock {}", path.display()))?;
    // SAFETY: flock on a descriptor this process holds.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("cannot lock {}", path.display()));
    }
    Ok(StateLock { _file: file })
}

/// One container attached to a network.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub id: String,
    pub ifname: String,
    pub netns: String,
    /// The name others resolve it by (the container id unless given).
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The hosts file whose block this attachment keeps, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts_file: Option<PathBuf>,
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    /// The chain's ADD result (the prevResult of DEL and CHECK).
    pub result: Value,
    /// The conflist the ADD ran, which DEL runs again.
    pub conflist: Value,
}

/// A container id or interface name as part of a file name: no path separators.
pub fn check_component(what: &str, value: &str) -> Result<()> {
    if value.is_empty() || value.contains('/') || value == "." || value == ".." {
        bail!("invalid {what} {value:?}: it must be non-empty and contain no '/'");
    }
    Ok(())
}

fn network_dir(dirs: &Dirs, network: &str) -> PathBuf {
    dirs.state_dir.join("attachments").join(network)
}

fn record_path(dirs: &Dirs, network: &str, id: &str, ifname: &str) -> PathBuf {
    network_dir(dirs, network).join(format!("{id}-{ifname}.json"))
}

fn read_member(path: &Path) -> Result<Member> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read attachment record {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("attachment record {} is malformed", path.display()))
}

/// The attachment of `id` on `ifname` to `network`, if recorded.
pub fn member(dirs: &Dirs, network: &str, id: &str, ifname: &str) -> Result<Option<Member>> {
    let path = record_path(dirs, network, id, ifname);
    if !path.exists() {
        return Ok(None);
    }
    read_member(&path).map(Some)
}

/// Every attachment to `network`, by container id.
pub fn members(dirs: &Dirs, network: &str) -> Result<Vec<Member>> {
    let dir = network_dir(dirs, network);
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        if entry.path().extension().and_then(|e| e.to_str()) == Some("json") {
            found.push(read_member(&entry.path())?);
        }
    }
    found.sort_by(|a, b| (&a.id, &a.ifname).cmp(&(&b.id, &b.ifname)));
    Ok(found)
}

/// Every attachment to every network.
pub fn all_members(dirs: &Dirs) -> Result<Vec<Member>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dirs.state_dir.join("attachments")).into_iter().flatten().flatten() {
        if let Some(network) = entry.file_name().to_str() {
            found.extend(members(dirs, network)?);
        }
    }
    Ok(found)
}

pub fn save(dirs: &Dirs, network: &str, member: &Member) -> Result<()> {
    let dir = network_dir(dirs, network);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = record_path(dirs, network, &member.id, &member.ifname);
    let partial = path.with_extension("partial");
    std::fs::write(&partial, serde_json::to_vec_pretty(member).expect("a record is JSON"))
        .with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, &path).with_context(|| format!("cannot write {}", path.display()))
}

pub fn forget(dirs: &Dirs, network: &str, id: &str, ifname: &str) -> Result<()> {
    let path = record_path(dirs, network, id, ifname);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
    // The network's directory goes with its last member.
    let _ = std::fs::remove_dir(network_dir(dirs, network));
    Ok(())
}
