//! The nftables backend, laid out as the reference plugins' nftables backend lays it out:
//! table `inet cni_plugins_masquerade`, a `postrouting` nat chain that skips multicast and
//! goes to `masq_checks`, and there one rule per address commented with a hash of the
//! network and of interface and container, then a readable description. Written over
//! netlink, one transaction per operation; no process is run.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{hash, Attachment, Firewall};
use crate::error::{CniError, CniResult, IO_FAILURE};
use crate::netlink::nftables::{
    with_shared, BaseChain, Batch, Expr, Family, NftClient, Verdict, META_NFPROTO, NETWORK_HEADER, NFPROTO_IPV4,
    NFPROTO_IPV6,
};
use crate::netlink::NetlinkError;

pub struct Nftables;

const TABLE: &str = "cni_plugins_masquerade";
const CHECKS: &str = "masq_checks";
const POSTROUTING: &str = "postrouting";
const HOOK_POSTROUTING: u32 = 4;
const PRIORITY_SRCNAT: i32 = 100;
/// The longest comment nftables keeps.
const COMMENT_MAX: usize = 128;

fn failed(e: NetlinkError) -> CniError {
    CniError::new(IO_FAILURE, format!("{e}; set \"ipMasqBackend\": \"iptables\" where the kernel has no nf_tables"))
}

fn network_hash(network: &str) -> String {
    hash(network, 16)
}

/// The prefix every rule of this attachment's comment starts with.
fn instance_hash(attachment: &Attachment) -> String {
    format!(
        "{}-{}",
        network_hash(attachment.network),
        hash(&format!("{}:{}", attachment.ifname, attachment.container_id), 16)
    )
}

fn comment(attachment: &Attachment) -> String {
    let clean = |s: &str| s.replace('"', "");
    let mut text = format!(
        "{}, net: {}, if: {}, id: {}",
        instance_hash(attachment),
        clean(attachment.network),
        clean(attachment.ifname),
        clean(attachment.container_id)
    );
    if text.len() > COMMENT_MAX {
        let mut end = COMMENT_MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// The `meta nfproto` check an inet table needs before a network-header field; once per
/// rule, as `nft` writes it.
fn family_check(address: IpAddr) -> [Expr; 2] {
    let proto = if address.is_ipv4() { NFPROTO_IPV4 } else { NFPROTO_IPV6 };
    [Expr::Meta(META_NFPROTO), Expr::Equal(vec![proto])]
}

/// Where `ip saddr`/`ip6 saddr` (or daddr) sits in the network header: offset, length.
fn address_field(address: IpAddr, source: bool) -> (u32, u32) {
    match (address, source) {
        (IpAddr::V4(_), true) => (12, 4),
        (IpAddr::V4(_), false) => (16, 4),
        (IpAddr::V6(_), true) => (8, 16),
        (IpAddr::V6(_), false) => (24, 16),
    }
}

fn octets(address: IpAddr) -> Vec<u8> {
    match address {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// A source address equal to `address`.
fn source_is(address: IpAddr) -> [Expr; 2] {
    let (offset, len) = address_field(address, true);
    [Expr::Payload { base: NETWORK_HEADER, offset, len }, Expr::Equal(octets(address))]
}

/// A destination inside `net` (`==`) or outside it (`!=`), in the expressions `nft` gives
/// a prefix (the golden test in tests/bridge.rs compares them): a prefix of whole bytes
/// compares just those bytes; any other masks the whole address first.
fn destination_in(net: IpNet, inside: bool) -> Vec<Expr> {
    let (offset, len) = address_field(net.addr(), false);
    let mut network = octets(net.network());
    let prefix_bytes = usize::from(net.prefix_len()) / 8;
    let mut exprs = if net.prefix_len() > 0 && net.prefix_len() % 8 == 0 {
        network.truncate(prefix_bytes);
        vec![Expr::Payload { base: NETWORK_HEADER, offset, len: prefix_bytes as u32 }]
    } else {
        vec![Expr::Payload { base: NETWORK_HEADER, offset, len }, Expr::Mask(octets(net.netmask()))]
    };
    exprs.push(if inside { Expr::Equal(network) } else { Expr::NotEqual(network) });
    exprs
}

/// The table, its chains and `postrouting`'s three rules, rewritten in one transaction as
/// the reference does on every ADD.
fn table_and_chains(batch: &mut Batch) {
    batch.add_table(Family::Inet, TABLE);
    batch.add_chain(Family::Inet, TABLE, CHECKS, None);
    batch.add_chain(
        Family::Inet,
        TABLE,
        POSTROUTING,
        Some(&BaseChain { kind: "nat", hook: HOOK_POSTROUTING, priority: PRIORITY_SRCNAT }),
    );
    batch.flush_chain(Family::Inet, TABLE, POSTROUTING);
    for multicast in ["224.0.0.0/4", "ff00::/8"] {
        let multicast: IpNet = multicast.parse().unwrap();
        let mut rule = family_check(multicast.addr()).to_vec();
        rule.extend(destination_in(multicast, true));
        rule.push(Expr::Verdict(Verdict::Return));
        batch.add_rule(Family::Inet, TABLE, POSTROUTING, &rule, None);
    }
    batch.add_rule(Family::Inet, TABLE, POSTROUTING, &[Expr::Verdict(Verdict::Goto(CHECKS.into()))], None);
}

/// Whether `postrouting` holds its three rules (its goto keeps `masq_checks` alive).
/// Then ADD writes only its own rule: re-declaring existing chains or replacing rules
/// makes the kernel release the old objects after an RCU grace period, which a process
/// leaving nf_tables waits out (10-25 ms here).
fn in_place(client: &mut NftClient) -> Result<bool, NetlinkError> {
    let present = client.rules(Family::Inet, TABLE, POSTROUTING)?;
    Ok(present.len() == 3 && present.iter().all(|r| r.comment.is_none()))
}

/// Deletes the rules of `masq_checks` whose comment `doomed` picks, in one transaction.
fn delete_rules(doomed: impl Fn(&str) -> bool) -> CniResult<()> {
    let outcome = with_shared(|client| {
        let mut batch = Batch::new();
        for rule in client.rules(Family::Inet, TABLE, CHECKS)? {
            if rule.comment.as_deref().is_some_and(&doomed) {
                batch.delete_rule(Family::Inet, TABLE, CHECKS, rule.handle);
            }
        }
        client.commit(batch)
    });
    match outcome {
        // A kernel without nf_tables holds no such rules.
        Err(e) if [libc::EPROTONOSUPPORT, libc::EAFNOSUPPORT, libc::EOPNOTSUPP].contains(&e.errno) => Ok(()),
        other => other.map_err(failed),
    }
}

impl Firewall for Nftables {
    fn add_masquerade(&self, attachment: &Attachment, addresses: &[IpNet]) -> CniResult<()> {
        let note = comment(attachment);
        with_shared(|client| {
            let mut whole = !in_place(client)?;
            loop {
                let mut batch = Batch::new();
                if whole {
                    table_and_chains(&mut batch);
                }
                for address in addresses {
                    let mut rule = family_check(address.addr()).to_vec();
                    rule.extend(source_is(address.addr()));
                    rule.extend(destination_in(address.trunc(), false));
                    rule.push(Expr::Masquerade);
                    batch.add_rule(Family::Inet, TABLE, CHECKS, &rule, Some(&note));
                }
                match client.commit(batch) {
                    // The table went away between the look and the write: write all of it.
                    Err(e) if e.errno == libc::ENOENT && !whole => whole = true,
                    other => return other,
                }
            }
        })
        .map_err(failed)
    }

    fn del_masquerade(&self, attachment: &Attachment, _known: &[IpNet]) -> CniResult<()> {
        // The rules are found by their comment: the same address may have been given to
        // another container since, and its rule must stay.
        let prefix = instance_hash(attachment);
        delete_rules(|comment| comment.starts_with(&prefix))
    }

    fn gc_masquerade(&self, network: &str, valid: &[(String, String)]) -> CniResult<()> {
        let prefix = network_hash(network);
        let keep: Vec<String> =
            valid.iter().map(|(id, ifname)| instance_hash(&Attachment { network, container_id: id, ifname })).collect();
        delete_rules(|comment| comment.starts_with(&prefix) && !keep.iter().any(|k| comment.starts_with(k.as_str())))
    }
}
