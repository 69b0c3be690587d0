//! host-local's store in the reference plugin's on-disk format, so a node can share it with
//! the reference binary: `<dataDir>/<network>/<ip>` holding `id\r\nifname`,
//! `last_reserved_ip.<set>`, and an exclusive flock on `lock`.
//!
//! Lookups by attachment go through berth's index (`.berth-index/`, one file per container
//! id and interface listing its addresses), so cost stays flat as allocations grow. The
//! index records the store directory's mtime after berth's own last change; any other
//! writer (the reference plugin) changes that mtime, and the next lookup rescans every
//! file once and rebuilds the index.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{CniError, CniResult};

const LINE_BREAK: &str = "\r\n";
const LAST_RESERVED: &str = "last_reserved_ip.";
const INDEX_DIR: &str = ".berth-index";
const STAMP: &str = "stamp";

/// The store of one network, locked for as long as it lives.
pub struct Store {
    dir: PathBuf,
    _lock: File,
    /// Whether the index is complete, once checked: under the lock only this store changes
    /// the directory, so a check holds until it does.
    index_current: Option<bool>,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> CniError {
    CniError::io(format!("{what} {}", path.display()), e)
}

/// What an address file says: `id\r\nifname` (or just `id`, from old versions).
fn owner_of(text: &str) -> (String, String) {
    let text = text.trim();
    match text.split_once(LINE_BREAK) {
        Some((id, ifname)) => (id.trim().to_string(), ifname.trim().to_string()),
        None => (text.to_string(), String::new()),
    }
}

impl Store {
    /// Opens (creating) `<data_dir>/<network>` and takes its lock, waiting for other calls.
    pub fn open(data_dir: &Path, network: &str) -> CniResult<Store> {
        let dir = data_dir.join(network);
        fs::create_dir_all(dir.join(INDEX_DIR)).map_err(|e| io("cannot create the host-local store", &dir, e))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io("cannot open the store lock", &lock_path, e))?;
        // SAFETY: flock on a descriptor this process holds.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io("cannot lock", &lock_path, std::io::Error::last_os_error()));
        }
        Ok(Store { dir, _lock: lock, index_current: None })
    }

    fn key_file(&self, id: &str, ifname: &str) -> PathBuf {
        let key = hex::encode(Sha256::digest(format!("{id}\0{ifname}").as_bytes()));
        self.dir.join(INDEX_DIR).join(key)
    }

    fn dir_mtime(&self) -> String {
        fs::metadata(&self.dir).map(|m| format!("{}.{}", m.mtime(), m.mtime_nsec())).unwrap_or_default()
    }

    /// Records that the index is complete as of the directory's current state.
    fn stamp(&mut self) -> CniResult<()> {
        let path = self.dir.join(INDEX_DIR).join(STAMP);
        fs::write(&path, self.dir_mtime()).map_err(|e| io("cannot write", &path, e))?;
        self.index_current = Some(true);
        Ok(())
    }

    fn index_is_current(&mut self) -> bool {
        if let Some(current) = self.index_current {
            return current;
        }
        let current =
            fs::read_to_string(self.dir.join(INDEX_DIR).join(STAMP)).map(|s| s == self.dir_mtime()).unwrap_or(false);
        self.index_current = Some(current);
        current
    }

    /// Every address file and its owner, read from disk (the slow path).
    fn scan(&self) -> CniResult<BTreeMap<IpAddr, (String, String)>> {
        let mut out = BTreeMap::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| io("cannot read", &self.dir, e))?.flatten() {
            let Some(ip) = entry.file_name().to_str().and_then(|n| n.parse::<IpAddr>().ok()) else { continue };
            if let Ok(text) = fs::read_to_string(entry.path()) {
                out.insert(ip, owner_of(&text));
            }
        }
        Ok(out)
    }

    /// Rebuilds the index from every address file.
    fn rebuild(&mut self) -> CniResult<()> {
        let index = self.dir.join(INDEX_DIR);
        for entry in fs::read_dir(&index).map_err(|e| io("cannot read", &index, e))?.flatten() {
            let _ = fs::remove_file(entry.path());
        }
        let mut by_key: BTreeMap<(String, String), Vec<IpAddr>> = BTreeMap::new();
        for (ip, owner) in self.scan()? {
            by_key.entry(owner).or_default().push(ip);
        }
        for ((id, ifname), ips) in by_key {
            self.write_key(&id, &ifname, &ips)?;
        }
        self.stamp()
    }

    fn write_key(&self, id: &str, ifname: &str, ips: &[IpAddr]) -> CniResult<()> {
        let path = self.key_file(id, ifname);
        if ips.is_empty() {
            let _ = fs::remove_file(&path);
            return Ok(());
        }
        let text: String = ips.iter().map(|ip| format!("{ip}\n")).collect();
        fs::write(&path, text).map_err(|e| io("cannot write", &path, e))
    }

    fn read_key(&self, id: &str, ifname: &str) -> Vec<IpAddr> {
        fs::read_to_string(self.key_file(id, ifname))
            .map(|t| t.lines().filter_map(|l| l.parse().ok()).collect())
            .unwrap_or_default()
    }

    /// The addresses held by an attachment (also those written by the reference plugin,
    /// and, as it does, those an old version wrote with the id alone).
    pub fn get_by_id(&mut self, id: &str, ifname: &str) -> CniResult<Vec<IpAddr>> {
        if !self.index_is_current() {
            self.rebuild()?;
        }
        let mut ips = self.read_key(id, ifname);
        ips.extend(self.read_key(id, ""));
        // An address file changed behind the index is not trusted.
        ips.retain(|ip| {
            fs::read_to_string(self.dir.join(ip.to_string()))
                .map(|t| {
                    let (i, f) = owner_of(&t);
                    i == id && (f == ifname || f.is_empty())
                })
                .unwrap_or(false)
        });
        Ok(ips)
    }

    /// Reserves `ip` for the attachment; false when it is taken.
    pub fn reserve(&mut self, id: &str, ifname: &str, ip: IpAddr, set: usize) -> CniResult<bool> {
        let current = self.index_is_current();
        let path = self.dir.join(ip.to_string());
        // From here the directory changes: the index is current again once stamped.
        self.index_current = None;
        let mut file = match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(io("cannot reserve", &path, e)),
        };
        if let Err(e) = file.write_all(format!("{}{LINE_BREAK}{ifname}", id.trim()).as_bytes()) {
            let _ = fs::remove_file(&path);
            return Err(io("cannot write", &path, e));
        }
        let last = self.dir.join(format!("{LAST_RESERVED}{set}"));
        fs::write(&last, ip.to_string()).map_err(|e| io("cannot write", &last, e))?;
        let mut ips = self.read_key(id, ifname);
        ips.push(ip);
        self.write_key(id, ifname, &ips)?;
        if current {
            self.stamp()?
        } else {
            self.rebuild()?
        }
        Ok(true)
    }

    pub fn last_reserved(&self, set: usize) -> Option<IpAddr> {
        fs::read_to_string(self.dir.join(format!("{LAST_RESERVED}{set}"))).ok()?.trim().parse().ok()
    }

    /// Releases every address of the attachment; nothing to release is fine.
    pub fn release_by_id(&mut self, id: &str, ifname: &str) -> CniResult<Vec<IpAddr>> {
        let ips = self.get_by_id(id, ifname)?;
        self.index_current = None;
        for ip in &ips {
            let path = self.dir.join(ip.to_string());
            fs::remove_file(&path).map_err(|e| io("cannot release", &path, e))?;
        }
        self.write_key(id, ifname, &[])?;
        self.write_key(id, "", &[])?;
        self.stamp()?;
        Ok(ips)
    }

    /// Releases every address whose attachment `keep` rejects; returns them.
    pub fn release_unless(&mut self, keep: impl Fn(&str, &str) -> bool) -> CniResult<Vec<IpAddr>> {
        let mut released = Vec::new();
        for (ip, (id, ifname)) in self.scan()? {
            if !keep(&id, &ifname) {
                let path = self.dir.join(ip.to_string());
                fs::remove_file(&path).map_err(|e| io("cannot release", &path, e))?;
                released.push(ip);
            }
        }
        self.rebuild()?;
        Ok(released)
    }

    /// How many addresses are reserved (directory entries only, no contents read).
    pub fn reserved_count(&self) -> CniResult<usize> {
        Ok(fs::read_dir(&self.dir)
            .map_err(|e| io("cannot read", &self.dir, e))?
            .flatten()
            .filter(|e| e.file_name().to_str().is_some_and(|n| n.parse::<IpAddr>().is_ok()))
            .count())
    }
}
