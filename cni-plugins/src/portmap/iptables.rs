//! The iptables backend: the reference plugin 1.1.1's chains and rules, to the letter (so
//! either plugin can take over from the other): `CNI-HOSTPORT-DNAT` jumped to from
//! PREROUTING and OUTPUT for local destinations, one `CNI-DN-<hash>` chain per container
//! entered through multiport rules commented `dnat name: "N" id: "C"`, and the masquerade
//! mark set by `CNI-HOSTPORT-SETMARK` (or an external chain) and acted on by
//! `CNI-HOSTPORT-MASQ`, first in POSTROUTING. Each operation reads the nat table once
//! (`iptables-save`) and writes in one `iptables-restore --noflush` transaction per family,
//! where the reference runs a process per rule.

use std::net::IpAddr;

use ipnet::IpNet;

use super::config::{MarkChain, PortMapConf, Protocol};
use super::{Doomed, Publication, Published};
use crate::error::CniResult;
use crate::firewall::hash;
use crate::firewall::iptables::{quote, removal, restore, save_all, Family};

pub struct Iptables;

const TOP_DNAT: &str = "CNI-HOSTPORT-DNAT";
const SET_MARK: &str = "CNI-HOSTPORT-SETMARK";
const MARK_MASQ: &str = "CNI-HOSTPORT-MASQ";

/// `CNI-DN-` and hex of sha512(network name + container id), 28 characters in all, as the
/// reference names the container's chain.
pub fn dnat_chain(network: &str, container_id: &str) -> String {
    format!("CNI-DN-{}", hash(&format!("{network}{container_id}"), 21))
}

/// The chain older reference versions made per container; removed when found.
fn old_snat_chain(network: &str, container_id: &str) -> String {
    format!("CNI-SN-{}", hash(&format!("{network}{container_id}"), 21))
}

fn dnat_comment(network: &str, container_id: &str) -> String {
    let text = format!("dnat name: \"{network}\" id: \"{container_id}\"");
    if text.len() <= 255 {
        text
    } else {
        format!("{}...", &text[..253])
    }
}

fn has_chain(saved: &str, chain: &str) -> bool {
    saved.lines().any(|l| l.starts_with(&format!(":{chain} ")))
}

fn has_rule(saved: &str, rule: &str) -> bool {
    saved.lines().any(|l| l == rule)
}

fn family_of(address: IpAddr) -> Family {
    if address.is_ipv4() {
        Family::V4
    } else {
        Family::V6
    }
}

/// An address as iptables-save prints a host match.
fn host(address: IpAddr) -> String {
    IpNet::new(address, if address.is_ipv4() { 32 } else { 128 }).expect("a host prefix is valid").to_string()
}

fn destination(address: IpAddr, port: u16) -> String {
    match address {
        IpAddr::V4(_) => format!("{address}:{port}"),
        IpAddr::V6(_) => format!("[{address}]:{port}"),
    }
}

/// The restore lines that make sure `chain` exists, `rules` are in it, and nothing more
/// (a chain declared in a `--noflush` restore is flushed, so only a missing one is).
fn ensure_chain(saved: &str, chain: &str, rules: &[String], out: &mut String) {
    if !has_chain(saved, chain) {
        out.push_str(&format!(":{chain} - [0:0]\n"));
    }
    for rule in rules {
        if !has_rule(saved, rule) {
            out.push_str(rule);
            out.push('\n');
        }
    }
}

/// The rules of one family for one container address, as `iptables-save` prints them.
fn forward_rules(c: &PortMapConf, container_id: &str, address: IpNet, saved: &str) -> String {
    let network = c.network();
    let v6 = address.addr().is_ipv6();
    let chain = dnat_chain(network, container_id);
    let mut out = String::new();
    let set_mark = match &c.mark {
        MarkChain::External(chain) => chain.clone(),
        MarkChain::Bit(_) => SET_MARK.to_string(),
    };
    if c.snat {
        if let MarkChain::Bit(bit) = c.mark {
            let mark = format!("{:#x}/{:#x}", 1u32 << bit, 1u32 << bit);
            ensure_chain(
                saved,
                SET_MARK,
                &[format!(
                    "-A {SET_MARK} -m comment --comment \"CNI portfwd masquerade mark\" -j MARK --set-xmark {mark}"
                )],
                &mut out,
            );
            ensure_chain(saved, MARK_MASQ, &[format!("-A {MARK_MASQ} -m mark --mark {mark} -j MASQUERADE")], &mut out);
            let entry = format!("-m comment --comment \"CNI portfwd requiring masquerade\" -j {MARK_MASQ}");
            if !has_rule(saved, &format!("-A POSTROUTING {entry}")) {
                out.push_str(&format!("-I POSTROUTING 1 {entry}\n"));
            }
        }
    }
    let entries: Vec<String> = ["PREROUTING", "OUTPUT"]
        .iter()
        .map(|hook| format!("-A {hook} -m addrtype --dst-type LOCAL -j {TOP_DNAT}"))
        .collect();
    ensure_chain(saved, TOP_DNAT, &[], &mut out);
    for entry in &entries {
        if !has_rule(saved, entry) {
            out.push_str(entry);
            out.push('\n');
        }
    }
    // The container's chain, written afresh (an ADD repeated replaces its rules).
    if has_chain(saved, &chain) {
        for line in saved.lines().filter_map(|l| l.strip_prefix(&format!("-A {TOP_DNAT} "))) {
            if line.ends_with(&format!("-j {chain}")) {
                out.push_str(&format!("-D {TOP_DNAT} {line}\n"));
            }
        }
        out.push_str(&format!("-F {chain}\n"));
    } else {
        out.push_str(&format!(":{chain} - [0:0]\n"));
    }
    for mapping in c.mappings.iter().filter(|m| m.applies_to(address.addr())) {
        let proto = mapping.protocol.name();
        let to = match mapping.host_ip {
            Some(ip) => format!("-d {} ", host(ip)),
            None => String::new(),
        };
        let matched = format!("-p {proto} -m {proto} --dport {}", mapping.host_port);
        if c.snat {
            let hairpin = if c.masq_all { String::new() } else { format!("-s {} ", address.trunc()) };
            out.push_str(&format!("-A {chain} {hairpin}{to}{matched} -j {set_mark}\n"));
            if !v6 && !c.masq_all {
                out.push_str(&format!("-A {chain} -s 127.0.0.1/32 {to}{matched} -j {set_mark}\n"));
            }
        }
        out.push_str(&format!(
            "-A {chain} {to}{matched} -j DNAT --to-destination {}\n",
            destination(address.addr(), mapping.container_port)
        ));
    }
    // The entry rules: multiport, at most 15 ports each, by protocol in name order, over
    // every mapping (as the reference groups them).
    let comment = quote(&dnat_comment(network, container_id));
    let conditions = if v6 { &c.conditions_v6 } else { &c.conditions_v4 };
    let conditions = conditions.iter().map(|w| format!(" {w}")).collect::<String>();
    let mut protocols: Vec<Protocol> = c.mappings.iter().map(|m| m.protocol).collect();
    protocols.sort_by_key(|p| p.name());
    protocols.dedup();
    for protocol in protocols {
        let ports: Vec<String> =
            c.mappings.iter().filter(|m| m.protocol == protocol).map(|m| m.host_port.to_string()).collect();
        for group in ports.chunks(15) {
            out.push_str(&format!(
                "-A {TOP_DNAT} -p {} -m comment --comment {comment} -m multiport --dports {}{conditions} -j {chain}\n",
                protocol.name(),
                group.join(",")
            ));
        }
    }
    out
}

/// The value following `flag` in a saved rule.
fn argument<'a>(rule: &'a str, flag: &str) -> Option<&'a str> {
    let mut words = rule.split_whitespace();
    words.find(|w| *w == flag)?;
    words.next()
}

/// (network, container id, chain) of each container chain entered from CNI-HOSTPORT-DNAT.
fn owners(saved: &str) -> Vec<(String, String, String)> {
    let marker = "--comment \"dnat name: \\\"";
    let mut out: Vec<(String, String, String)> = Vec::new();
    for line in saved.lines().filter_map(|l| l.strip_prefix(&format!("-A {TOP_DNAT} "))) {
        let (Some(at), Some(chain)) = (line.find(marker), line.rsplit(' ').next()) else { continue };
        let rest = &line[at + marker.len()..];
        let Some((network, rest)) = rest.split_once("\\\" id: \\\"") else { continue };
        let Some((id, _)) = rest.split_once("\\\"") else { continue };
        let owner = (network.to_string(), id.to_string(), chain.to_string());
        if !out.contains(&owner) {
            out.push(owner);
        }
    }
    out
}

/// The ports published in a saved nat table.
fn published_in(saved: &str) -> Vec<Published> {
    let mut out = Vec::new();
    for (network, container_id, chain) in owners(saved) {
        for rule in saved.lines().filter_map(|l| l.strip_prefix(&format!("-A {chain} "))) {
            if !rule.contains(" -j DNAT ") {
                continue;
            }
            let protocol = argument(rule, "-p").and_then(Protocol::from_name);
            let port = argument(rule, "--dport").and_then(|p| p.parse().ok());
            let (Some(protocol), Some(host_port)) = (protocol, port) else { continue };
            let host_ip = argument(rule, "-d").and_then(|d| d.split('/').next()).and_then(|a| a.parse().ok());
            out.push(Published {
                network: network.clone(),
                container_id: container_id.clone(),
                protocol,
                host_ip,
                host_port,
                tag: None,
            });
        }
    }
    out
}

/// The families whose nat table may hold the chain (read without a process where
/// iptables keeps its rules in nf_tables).
fn families_holding(chain: &str) -> Vec<Family> {
    [Family::V4, Family::V6].into_iter().filter(|f| f.may_hold(chain)).collect()
}

/// The families whose CNI-HOSTPORT-DNAT may enter a container's chain.
fn families_publishing() -> Vec<Family> {
    [Family::V4, Family::V6].into_iter().filter(|f| f.may_have_rules(TOP_DNAT)).collect()
}

impl super::Backend for Iptables {
    fn publish(&self, p: &Publication) -> CniResult<()> {
        for address in p.addresses {
            let family = family_of(address.addr());
            let saved = save_all(&[family]).pop().map(|(_, s)| s).unwrap_or_default();
            restore(family, &forward_rules(p.conf, p.container_id, *address, &saved))?;
        }
        Ok(())
    }

    fn published(&self) -> CniResult<Vec<Published>> {
        Ok(save_all(&families_publishing()).iter().flat_map(|(_, saved)| published_in(saved)).collect())
    }

    fn unpublish(&self, network: &str, doomed: &Doomed) -> CniResult<Vec<Published>> {
        let families = match doomed {
            Doomed::Attachment(id) => families_holding(&dnat_chain(network, id)),
            Doomed::AllBut(_) => families_publishing(),
        };
        let mut removed = Vec::new();
        for (family, saved) in save_all(&families) {
            let ids: Vec<String> = match doomed {
                Doomed::Attachment(id) => vec![id.to_string()],
                Doomed::AllBut(keep) => owners(&saved)
                    .into_iter()
                    .filter(|(n, id, chain)| n == network && !keep.contains(id) && *chain == dnat_chain(n, id))
                    .map(|(_, id, _)| id)
                    .collect(),
            };
            let chains: Vec<String> =
                ids.iter().flat_map(|id| [dnat_chain(network, id), old_snat_chain(network, id)]).collect();
            removed.extend(published_in(&saved).into_iter().filter(|p| ids.iter().any(|id| p.is_of(network, id))));
            let rules = removal(&saved, &chains);
            if !rules.is_empty() {
                restore(family, &rules)?;
            }
        }
        Ok(removed)
    }
}
