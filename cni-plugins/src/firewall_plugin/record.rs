//! What the firewall plugin opened for each attachment: its addresses, one small file per
//! attachment under /run (the rules do not outlive a boot either), so that DEL without a
//! prevResult and GC find the rules, which name no container.

use std::net::IpAddr;
use std::path::PathBuf;

use crate::error::{CniError, CniResult};

const DIR: &str = "/run/cni/berth-firewall";

/// The directory of one network's records.
fn network_dir(network: &str) -> PathBuf {
    // Network names are file names already (libcni allows letters, digits, `_.-`); a
    // separator is replaced all the same so that no name points elsewhere.
    PathBuf::from(DIR).join(network.replace('/', "_"))
}

fn file(network: &str, container_id: &str, ifname: &str) -> PathBuf {
    network_dir(network).join(format!("{}_{}", container_id.replace('/', "_"), ifname.replace('/', "_")))
}

/// A record: the container id, then the interface, then one address a line.
pub fn save(network: &str, container_id: &str, ifname: &str, addresses: &[IpAddr]) -> CniResult<()> {
    let path = file(network, container_id, ifname);
    std::fs::create_dir_all(network_dir(network))
        .map_err(|e| CniError::io(format!("cannot create {}", network_dir(network).display()), e))?;
    let mut text = format!("{container_id}\n{ifname}\n");
    for address in addresses {
        text.push_str(&format!("{address}\n"));
    }
    std::fs::write(&path, text).map_err(|e| CniError::io(format!("cannot write {}", path.display()), e))
}

/// (container id, interface, addresses) of the record at `path`.
fn read(path: &std::path::Path) -> Option<(String, String, Vec<IpAddr>)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    let (id, ifname) = (lines.next()?.to_string(), lines.next()?.to_string());
    Some((id, ifname, lines.filter_map(|l| l.parse().ok()).collect()))
}

/// The attachment's recorded addresses (none when there is no record).
pub fn load(network: &str, container_id: &str, ifname: &str) -> Vec<IpAddr> {
    read(&file(network, container_id, ifname)).map(|(_, _, addresses)| addresses).unwrap_or_default()
}

pub fn remove(network: &str, container_id: &str, ifname: &str) {
    let _ = std::fs::remove_file(file(network, container_id, ifname));
}

/// Every recorded attachment of `network`: (container id, interface, addresses).
pub fn all(network: &str) -> Vec<(String, String, Vec<IpAddr>)> {
    let Ok(entries) = std::fs::read_dir(network_dir(network)) else { return Vec::new() };
    entries.flatten().filter_map(|entry| read(&entry.path())).collect()
}
