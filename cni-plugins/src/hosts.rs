//! The marked block a network owns in a container's hosts file: the lines between
//! `# berth-cni NETWORK begin` and `# berth-cni NETWORK end`. The rest of the file belongs
//! to whoever wrote the bundle. The file is rewritten in place (truncate and write the same
//! inode) because it is bind-mounted into the container at /etc/hosts, and a rename would
//! leave the container looking at the old file.

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context, Result};

/// One hosts line: an address and the names it answers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostsEntry {
    pub address: IpAddr,
    pub names: Vec<String>,
}

fn begin_marker(network: &str) -> String {
    format!("# berth-cni {network} begin")
}

fn end_marker(network: &str) -> String {
    format!("# berth-cni {network} end")
}

/// `text` with the network's block replaced by `entries` (appended when it had none;
/// removed, markers and all, when `entries` is empty).
pub fn with_block(text: &str, network: &str, entries: &[HostsEntry]) -> String {
    let (begin, end) = (begin_marker(network), end_marker(network));
    let mut kept: Vec<&str> = Vec::new();
    let mut insert_at = None;
    let mut inside = false;
    for line in text.lines() {
        if line == begin {
            inside = true;
            insert_at.get_or_insert(kept.len());
        } else if inside && line == end {
            inside = false;
        } else if !inside {
            kept.push(line);
        }
    }
    let mut block = Vec::new();
    if !entries.is_empty() {
        block.push(begin);
        block.extend(entries.iter().map(|e| format!("{}\t{}", e.address, e.names.join(" "))));
        block.push(end);
    }
    let at = insert_at.unwrap_or(kept.len());
    let mut lines: Vec<String> = kept[..at].iter().map(|l| l.to_string()).collect();
    lines.extend(block);
    lines.extend(kept[at..].iter().map(|l| l.to_string()));
    if lines.is_empty() {
        return String::new();
    }
    lines.join("\n") + "\n"
}

/// Sets the network's block of the hosts file at `path` in place. A file that no longer
/// exists (its bundle is gone) is left alone.
pub fn write_block(path: &Path, network: &str, entries: &[HostsEntry]) -> Result<()> {
    // Read as bytes: a container may write anything into its own hosts file, and what is not
    // UTF-8 there must not stop its block from being kept.
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read hosts file {}", path.display())),
    };
    let updated = with_block(&text, network, entries);
    if updated == text {
        return Ok(());
    }
    // Same inode: open without creating, truncate, write.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("cannot open hosts file {} for writing", path.display()))?;
    file.write_all(updated.as_bytes()).with_context(|| format!("cannot write hosts file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(address: &str, names: &[&str]) -> HostsEntry {
        HostsEntry { address: address.parse().unwrap(), names: names.iter().map(|n| n.to_string()).collect() }
    }

    #[test]
    fn the_block_is_appended_replaced_and_removed_leaving_other_lines_alone() {
        let base = "127.0.0.1\tlocalhost\n10.1.1.1\textra\n";
        let one = with_block(base, "web", &[entry("10.90.1.2", &["a", "alias"])]);
        assert_eq!(one, format!("{base}# berth-cni web begin\n10.90.1.2\ta alias\n# berth-cni web end\n"));
        let other_net = with_block(&one, "db", &[entry("10.90.2.2", &["a"])]);
        let two = with_block(&other_net, "web", &[entry("10.90.1.2", &["a"]), entry("fd00::3", &["b"])]);
        assert_eq!(
            two,
            "127.0.0.1\tlocalhost\n10.1.1.1\textra\n# berth-cni web begin\n10.90.1.2\ta\nfd00::3\tb\n# berth-cni web end\n# berth-cni db begin\n10.90.2.2\ta\n# berth-cni db end\n"
        );
        let gone = with_block(&with_block(&two, "web", &[]), "db", &[]);
        assert_eq!(gone, base);
        assert_eq!(with_block("", "web", &[]), "");
    }
}
