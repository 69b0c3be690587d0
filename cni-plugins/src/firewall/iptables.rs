//! The iptables backend: one `iptables-restore --noflush` per address family and
//! operation instead of a process per rule, and `iptables-save` only when the rules must be
//! found. Chains are `CNI-` and 24 hex digits of sha512(network name + container id), each
//! rule commented `name: "N" id: "C"`, as the reference plugins write them.

use std::io::Write;
use std::process::{Command, Stdio};

use ipnet::IpNet;

use super::{hash, Attachment, Firewall};
use crate::error::{CniError, CniResult, IO_FAILURE};
use crate::netlink::nftables::{with_shared, Family as TableFamily};

/// `CNI-` and the first 24 hex digits of sha512(network name + container id).
pub fn chain_name(network: &str, container_id: &str) -> String {
    format!("CNI-{}", hash(&format!("{network}{container_id}"), 24))
}

/// The comment on every rule of the container's chain.
pub fn comment(network: &str, container_id: &str) -> String {
    format!("name: \"{network}\" id: \"{container_id}\"")
}

pub struct Iptables;

/// An address family, as iptables and ip6tables split them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(address: &std::net::IpAddr) -> Family {
        if address.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    /// The prefix length of one address of the family.
    pub fn host_prefix(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    pub(crate) fn tool(self, suffix: &str) -> String {
        match self {
            Family::V4 => format!("iptables-{suffix}"),
            Family::V6 => format!("ip6tables-{suffix}"),
        }
    }

    /// Whether this family's tables may hold the chain: iptables-nft keeps it in nf_tables
    /// (asked over netlink, no process), iptables-legacy in x_tables (whose nat table is
    /// listed once anything used it); no iptables at all means no rules to remove.
    pub(crate) fn may_hold(self, chain: &str) -> bool {
        let (table_family, legacy_names) = match self {
            Family::V4 => (TableFamily::Ip, "/proc/net/ip_tables_names"),
            Family::V6 => (TableFamily::Ip6, "/proc/net/ip6_tables_names"),
        };
        if std::fs::read_to_string(legacy_names).is_ok_and(|names| names.lines().any(|n| n == "nat")) {
            return true;
        }
        with_shared(|nft| nft.has_chain(table_family, "nat", chain)).unwrap_or(true)
    }

    /// Whether the chain may hold rules: as `may_hold`, but an iptables-nft chain left empty
    /// (the reference never removes its shared chains) does not count.
    pub(crate) fn may_have_rules(self, chain: &str) -> bool {
        let (table_family, legacy_names) = match self {
            Family::V4 => (TableFamily::Ip, "/proc/net/ip_tables_names"),
            Family::V6 => (TableFamily::Ip6, "/proc/net/ip6_tables_names"),
        };
        if std::fs::read_to_string(legacy_names).is_ok_and(|names| names.lines().any(|n| n == "nat")) {
            return true;
        }
        with_shared(|nft| nft.rules(table_family, "nat", chain)).map(|rules| !rules.is_empty()).unwrap_or(true)
    }

    fn multicast(self) -> &'static str {
        match self {
            Family::V4 => "224.0.0.0/4",
            Family::V6 => "ff00::/8",
        }
    }
}

pub(crate) fn quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Applies `rules` (restore syntax for the nat table) in one transaction.
pub(crate) fn restore(family: Family, rules: &str) -> CniResult<()> {
    restore_table(family, "nat", rules)
}

/// Applies `rules` (restore syntax) to `table` in one `iptables-restore --noflush`.
pub(crate) fn restore_table(family: Family, table: &str, rules: &str) -> CniResult<()> {
    let tool = family.tool("restore");
    let mut child = Command::new(&tool)
        .args(["--noflush", "-w"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CniError::io(format!("cannot run {tool}"), e))?;
    let input = format!("*{table}\n{rules}COMMIT\n");
    let fed = child.stdin.take().map(|mut stdin| stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().map_err(|e| CniError::io(format!("cannot run {tool}"), e))?;
    if let Some(Err(e)) = fed {
        return Err(CniError::io(format!("cannot feed {tool}"), e));
    }
    if !out.status.success() {
        return Err(CniError::new(
            IO_FAILURE,
            format!("{tool} refused the {table} table's rules: {}", String::from_utf8_lossy(&out.stderr).trim()),
        )
        .with_details(input));
    }
    Ok(())
}

/// The nat tables of `families`, read at the same time.
pub(crate) fn save_all(families: &[Family]) -> Vec<(Family, String)> {
    let readers: Vec<(Family, Option<std::process::Child>)> = families
        .iter()
        .map(|f| {
            (
                *f,
                Command::new(f.tool("save"))
                    .args(["-t", "nat"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .ok(),
            )
        })
        .collect();
    readers
        .into_iter()
        .map(|(f, child)| {
            (
                f,
                child
                    .and_then(|c| c.wait_with_output().ok())
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

/// Restore lines removing `chains` and every rule that jumps to them.
pub(crate) fn removal(saved: &str, chains: &[String]) -> String {
    let mut rules = String::new();
    for line in saved.lines() {
        if let Some(rule) = line.strip_prefix("-A ") {
            let jumps = chains.iter().any(|c| rule.ends_with(&format!("-j {c}")));
            let own = chains.iter().any(|c| rule.starts_with(&format!("{c} ")));
            if jumps && !own {
                rules.push_str(&format!("-D {rule}\n"));
            }
        }
    }
    for chain in chains {
        if saved.lines().any(|l| l == format!(":{chain} - [0:0]") || l.starts_with(&format!(":{chain} "))) {
            rules.push_str(&format!("-F {chain}\n-X {chain}\n"));
        }
    }
    rules
}

impl Firewall for Iptables {
    fn add_masquerade(&self, attachment: &Attachment, addresses: &[IpNet]) -> CniResult<()> {
        let (network, container_id) = (attachment.network, attachment.container_id);
        let chain = chain_name(network, container_id);
        let note = quote(&comment(network, container_id));
        for family in [Family::V4, Family::V6] {
            let mine: Vec<&IpNet> = addresses
                .iter()
                .filter(|a| matches!((family, a), (Family::V4, IpNet::V4(_)) | (Family::V6, IpNet::V6(_))))
                .collect();
            if mine.is_empty() {
                continue;
            }
            let mut rules = format!(":{chain} - [0:0]\n");
            for address in &mine {
                rules.push_str(&format!("-A {chain} -d {} -m comment --comment {note} -j ACCEPT\n", address.trunc()));
            }
            rules.push_str(&format!(
                "-A {chain} ! -d {} -m comment --comment {note} -j MASQUERADE\n",
                family.multicast()
            ));
            for address in &mine {
                let host = IpNet::new(address.addr(), address.max_prefix_len()).unwrap();
                rules.push_str(&format!("-A POSTROUTING -s {host} -m comment --comment {note} -j {chain}\n"));
            }
            restore(family, &rules)?;
        }
        Ok(())
    }

    fn del_masquerade(&self, attachment: &Attachment, known: &[IpNet]) -> CniResult<()> {
        let (network, container_id) = (attachment.network, attachment.container_id);
        let chain = chain_name(network, container_id);
        let note = quote(&comment(network, container_id));
        let mut families: Vec<Family> = [Family::V4, Family::V6].into_iter().filter(|f| f.may_hold(&chain)).collect();
        if !known.is_empty() {
            // Straight to the rules the ADD wrote (it wrote none for a family without an
            // address); a family whose direct removal fails is read back below.
            families.retain(|family| {
                let mine: Vec<&IpNet> = known
                    .iter()
                    .filter(|a| matches!((family, a), (Family::V4, IpNet::V4(_)) | (Family::V6, IpNet::V6(_))))
                    .collect();
                if mine.is_empty() {
                    return false;
                }
                let mut rules = String::new();
                for address in &mine {
                    let host = IpNet::new(address.addr(), address.max_prefix_len()).unwrap();
                    rules.push_str(&format!("-D POSTROUTING -s {host} -m comment --comment {note} -j {chain}\n"));
                }
                rules.push_str(&format!("-F {chain}\n-X {chain}\n"));
                restore(*family, &rules).is_err()
            });
        }
        let chains = [chain];
        for (family, saved) in save_all(&families) {
            let rules = removal(&saved, &chains);
            if !rules.is_empty() {
                restore(family, &rules)?;
            }
        }
        Ok(())
    }

    fn gc_masquerade(&self, network: &str, valid: &[(String, String)]) -> CniResult<()> {
        let valid: Vec<&str> = valid.iter().map(|(id, _)| id.as_str()).collect();
        // iptables-save prints the comment as --comment "name: \"N\" id: \"C\"".
        let prefix = format!("--comment \"name: \\\"{network}\\\" id: \\\"");
        for (family, saved) in save_all(&[Family::V4, Family::V6]) {
            let mut stale: Vec<String> = Vec::new();
            for line in saved.lines().filter_map(|l| l.strip_prefix("-A ")) {
                let Some(chain) = line.split_whitespace().next().filter(|c| c.starts_with("CNI-")) else { continue };
                let Some(at) = line.find(&prefix) else { continue };
                let id = line[at + prefix.len()..].split("\\\"").next().unwrap_or_default();
                if !valid.contains(&id) && chain == chain_name(network, id) && !stale.contains(&chain.to_string()) {
                    stale.push(chain.to_string());
                }
            }
            let rules = removal(&saved, &stale);
            if !rules.is_empty() {
                restore(family, &rules)?;
            }
        }
        Ok(())
    }
}
