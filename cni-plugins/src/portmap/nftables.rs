//! The nftables backend: berth's own table `inet berth-portmap`, written over netlink in one
//! transaction per operation. Every published port is an element of a map, keyed by
//! protocol and host port (and host address, for a mapping on one address) and giving the
//! container's address and port, so four `dnat ... map` rules serve every container
//! however many ports each publishes. `prerouting` and `output` jump to them for traffic
//! to a local address. Each attachment adds its masquerade rules to `postrouting`
//! (connections it DNATed, from its own subnet or from 127.0.0.1; from anywhere with
//! `masqAll`). Elements and rules carry a comment naming network and container, by which
//! DEL and GC find them.
//!
//! `markMasqBit` and `externalSetMarkChain` concern the iptables chains only (the
//! masquerading happens in this table, which needs no mark), as in the reference's own
//! nftables backend; `conditionsV4`/`conditionsV6` are iptables match arguments and are
//! refused here.

use std::net::IpAddr;

use ipnet::IpNet;

use super::config::Protocol;
use super::{Doomed, Publication, Published};
use crate::error::{CniError, CniResult, IO_FAILURE, PORT_TAKEN, UNSUPPORTED_FIELD};
use crate::firewall::hash;
use crate::netlink::nftables::{
    concat_type, with_shared, BaseChain, Batch, Element, Expr, Family, NftClient, SetSpec, Verdict, CT_STATUS_DNAT,
    META_L4PROTO, META_NFPROTO, NETWORK_HEADER, NFPROTO_IPV4, NFPROTO_IPV6, REG32_00, REG_1, RTN_LOCAL,
    TRANSPORT_HEADER, TYPE_INET_PROTOCOL, TYPE_INET_SERVICE, TYPE_IP6ADDR, TYPE_IPADDR,
};
use crate::netlink::NetlinkError;

pub struct Nftables;

pub const TABLE: &str = "berth-portmap";
const HOSTPORTS: &str = "hostports";
const PREROUTING: &str = "prerouting";
const OUTPUT: &str = "output";
const POSTROUTING: &str = "postrouting";
const HOOK_PREROUTING: u32 = 0;
const HOOK_OUTPUT: u32 = 3;
const HOOK_POSTROUTING: u32 = 4;
const PRIORITY_DSTNAT: i32 = -100;
const PRIORITY_SRCNAT: i32 = 100;

/// The four maps: by family, and with or without the host address in the key.
#[derive(Clone, Copy, PartialEq, Eq)]
struct MapKind {
    v6: bool,
    with_address: bool,
}

const MAPS: [MapKind; 4] = [
    MapKind { v6: false, with_address: true },
    MapKind { v6: false, with_address: false },
    MapKind { v6: true, with_address: true },
    MapKind { v6: true, with_address: false },
];

impl MapKind {
    fn name(self) -> &'static str {
        match (self.v6, self.with_address) {
            (false, true) => "dnat4-address",
            (false, false) => "dnat4",
            (true, true) => "dnat6-address",
            (true, false) => "dnat6",
        }
    }

    fn address_len(self) -> u32 {
        if self.v6 {
            16
        } else {
            4
        }
    }

    fn address_type(self) -> u32 {
        if self.v6 {
            TYPE_IP6ADDR
        } else {
            TYPE_IPADDR
        }
    }

    /// Key: [address .] protocol . port; value: address . port (fields padded to 4 bytes).
    fn spec(self) -> SetSpec<'static> {
        let mut key_types = vec![TYPE_INET_PROTOCOL, TYPE_INET_SERVICE];
        let mut key_len = 8;
        if self.with_address {
            key_types.insert(0, self.address_type());
            key_len += self.address_len();
        }
        SetSpec {
            name: self.name(),
            key_type: concat_type(&key_types),
            key_len,
            value: Some((concat_type(&[self.address_type(), TYPE_INET_SERVICE]), self.address_len() + 4)),
        }
    }

    /// The rule: this family's packets whose key is in the map are DNATed to its value.
    fn rule(self) -> Vec<Expr> {
        let proto = if self.v6 { NFPROTO_IPV6 } else { NFPROTO_IPV4 };
        let mut rule = vec![Expr::Meta(META_NFPROTO), Expr::Equal(vec![proto])];
        let mut next = REG32_00;
        if self.with_address {
            let offset = if self.v6 { 24 } else { 16 };
            rule.push(Expr::PayloadInto { base: NETWORK_HEADER, offset, len: self.address_len(), register: REG_1 });
            next += self.address_len() / 4;
        }
        rule.push(Expr::MetaInto(META_L4PROTO, register(next)));
        rule.push(Expr::PayloadInto { base: TRANSPORT_HEADER, offset: 2, len: 2, register: register(next + 1) });
        rule.push(Expr::Lookup { set: self.name().into(), key: REG_1, value: Some(REG_1) });
        rule.push(Expr::Dnat { family: proto, address: REG_1, port: register(REG32_00 + self.address_len() / 4) });
        rule
    }
}

/// A 4-byte register as nft names it: one starting a 16-byte register goes by that one's
/// number.
fn register(reg32: u32) -> u32 {
    if (reg32 - REG32_00) % 4 == 0 {
        REG_1 + (reg32 - REG32_00) / 4
    } else {
        reg32
    }
}

fn octets(address: IpAddr) -> Vec<u8> {
    match address {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn padded(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out.resize(bytes.len().div_ceil(4) * 4, 0);
    out
}

fn element_key(protocol: Protocol, host_ip: Option<IpAddr>, port: u16) -> Vec<u8> {
    let mut key = host_ip.map(octets).unwrap_or_default();
    key.extend(padded(&[protocol.number()]));
    key.extend(padded(&port.to_be_bytes()));
    key
}

fn element_value(address: IpAddr, port: u16) -> Vec<u8> {
    let mut value = octets(address);
    value.extend(padded(&port.to_be_bytes()));
    value
}

/// The start of every comment of the network's elements and rules.
fn network_tag(network: &str) -> String {
    hash(network, 8)
}

/// The start of every comment of one attachment's elements and rules.
pub fn attachment_tag(network: &str, container_id: &str) -> String {
    format!("{}-{}", network_tag(network), hash(&format!("{network}\0{container_id}"), 16))
}

/// `<tag> net: N, id: C`, cut to what nftables keeps; the tag alone identifies.
fn comment(network: &str, container_id: &str) -> String {
    format!("{} net: {network}, id: {container_id}", attachment_tag(network, container_id))
}

/// (network, container id) as a comment spells them (the id possibly cut short).
fn holder_of(comment: &str) -> (String, String) {
    let text = comment.split_once(" net: ").map(|(_, t)| t).unwrap_or_default();
    let (network, id) = text.split_once(", id: ").unwrap_or((text, ""));
    (network.to_string(), id.to_string())
}

/// What a map element publishes.
fn published_by(kind: MapKind, element: &Element) -> Option<Published> {
    let comment = element.comment.as_deref()?;
    let key = &element.key;
    let at = if kind.with_address { kind.address_len() as usize } else { 0 };
    let host_ip = if kind.with_address {
        Some(if kind.v6 {
            IpAddr::from(<[u8; 16]>::try_from(key.get(..16)?).ok()?)
        } else {
            IpAddr::from(<[u8; 4]>::try_from(key.get(..4)?).ok()?)
        })
    } else {
        None
    };
    let (network, container_id) = holder_of(comment);
    Some(Published {
        network,
        container_id,
        protocol: Protocol::from_number(*key.get(at)?)?,
        host_ip,
        host_port: u16::from_be_bytes([*key.get(at + 4)?, *key.get(at + 5)?]),
        tag: comment.split(' ').next().map(String::from),
    })
}

/// The table, maps, chains and rules that every attachment shares.
fn skeleton(batch: &mut Batch) {
    batch.add_table(Family::Inet, TABLE);
    for kind in MAPS {
        batch.add_set(Family::Inet, TABLE, &kind.spec());
    }
    batch.add_chain(Family::Inet, TABLE, HOSTPORTS, None);
    batch.flush_chain(Family::Inet, TABLE, HOSTPORTS);
    for kind in MAPS {
        batch.add_rule(Family::Inet, TABLE, HOSTPORTS, &kind.rule(), None);
    }
    for (chain, hook) in [(PREROUTING, HOOK_PREROUTING), (OUTPUT, HOOK_OUTPUT)] {
        let base = BaseChain { kind: "nat", hook, priority: PRIORITY_DSTNAT };
        batch.add_chain(Family::Inet, TABLE, chain, Some(&base));
        batch.flush_chain(Family::Inet, TABLE, chain);
        let local = [
            Expr::FibDestinationType,
            Expr::Equal(RTN_LOCAL.to_ne_bytes().to_vec()),
            Expr::Verdict(Verdict::Jump(HOSTPORTS.into())),
        ];
        batch.add_rule(Family::Inet, TABLE, chain, &local, None);
    }
    let base = BaseChain { kind: "nat", hook: HOOK_POSTROUTING, priority: PRIORITY_SRCNAT };
    batch.add_chain(Family::Inet, TABLE, POSTROUTING, Some(&base));
}

/// Whether the shared part is in place; then ADD writes only its own elements and rules
/// (re-declaring objects makes the kernel release the old ones after a grace period that
/// the process would wait out).
fn in_place(client: &mut NftClient) -> Result<bool, NetlinkError> {
    Ok(client.rules(Family::Inet, TABLE, HOSTPORTS)?.len() == MAPS.len()
        && client.rules(Family::Inet, TABLE, PREROUTING)?.len() == 1
        && client.rules(Family::Inet, TABLE, OUTPUT)?.len() == 1)
}

/// `ip saddr`/`ip6 saddr` (or daddr) inside `net`.
fn address_in(net: IpNet, source: bool) -> Vec<Expr> {
    let offset = match (net.addr().is_ipv4(), source) {
        (true, true) => 12,
        (true, false) => 16,
        (false, true) => 8,
        (false, false) => 24,
    };
    let len = if net.addr().is_ipv4() { 4 } else { 16 };
    let mut exprs = vec![Expr::Payload { base: NETWORK_HEADER, offset, len }];
    if net.prefix_len() < net.max_prefix_len() {
        exprs.push(Expr::Mask(octets(net.netmask())));
    }
    exprs.push(Expr::Equal(octets(net.network())));
    exprs
}

/// The attachment's masquerade rules for one of its addresses: connections DNATed to it
/// from its own subnet (hairpin, other containers: their replies would not pass the host)
/// and from 127.0.0.1; from anywhere with `masqAll`.
fn masquerade_rules(address: IpNet, masq_all: bool) -> Vec<Vec<Expr>> {
    let proto = if address.addr().is_ipv4() { NFPROTO_IPV4 } else { NFPROTO_IPV6 };
    let container = IpNet::new(address.addr(), address.max_prefix_len()).expect("a host prefix is valid");
    let sources: Vec<Option<IpNet>> = if masq_all {
        vec![None]
    } else if address.addr().is_ipv4() {
        vec![Some(address.trunc()), Some("127.0.0.1/32".parse().expect("a valid prefix"))]
    } else {
        vec![Some(address.trunc())]
    };
    sources
        .into_iter()
        .map(|source| {
            let mut rule = vec![
                Expr::CtStatus,
                Expr::Mask(CT_STATUS_DNAT.to_ne_bytes().to_vec()),
                Expr::NotEqual(vec![0; 4]),
                Expr::Meta(META_NFPROTO),
                Expr::Equal(vec![proto]),
            ];
            if let Some(source) = source {
                rule.extend(address_in(source, true));
            }
            rule.extend(address_in(container, false));
            rule.push(Expr::Masquerade);
            rule
        })
        .collect()
}

fn failed(e: NetlinkError) -> CniError {
    CniError::new(IO_FAILURE, format!("{e}; set \"backend\": \"iptables\" where the kernel has no nf_tables"))
}

/// A kernel without nf_tables holds nothing of this backend.
fn absent(e: &NetlinkError) -> bool {
    [libc::EPROTONOSUPPORT, libc::EAFNOSUPPORT, libc::EOPNOTSUPP].contains(&e.errno)
}

/// Queues the removal of the elements and rules whose comment `doomed_tag` picks; returns
/// what they published.
fn queue_removal(
    client: &mut NftClient,
    batch: &mut Batch,
    doomed_tag: &dyn Fn(&str) -> bool,
) -> Result<Vec<Published>, NetlinkError> {
    let mut removed = Vec::new();
    for kind in MAPS {
        let doomed: Vec<Element> = client
            .elements(Family::Inet, TABLE, kind.name())?
            .into_iter()
            .filter(|e| e.comment.as_deref().is_some_and(doomed_tag))
            .collect();
        removed.extend(doomed.iter().filter_map(|e| published_by(kind, e)));
        batch.delete_elements(Family::Inet, TABLE, kind.name(), &doomed);
    }
    for rule in client.rules(Family::Inet, TABLE, POSTROUTING)? {
        if rule.comment.as_deref().is_some_and(doomed_tag) {
            batch.delete_rule(Family::Inet, TABLE, POSTROUTING, rule.handle);
        }
    }
    Ok(removed)
}

impl super::Backend for Nftables {
    fn publish(&self, p: &Publication) -> CniResult<()> {
        let c = p.conf;
        if !c.conditions_v4.is_empty() || !c.conditions_v6.is_empty() {
            return Err(CniError::new(
                UNSUPPORTED_FIELD,
                "conditionsV4/conditionsV6 are iptables match arguments: set \"backend\": \"iptables\" to use them",
            ));
        }
        let note = comment(c.network(), p.container_id);
        let tag = attachment_tag(c.network(), p.container_id);
        let mut elements: Vec<(MapKind, Element)> = Vec::new();
        for address in p.addresses {
            let v6 = address.addr().is_ipv6();
            for m in c.mappings.iter().filter(|m| m.applies_to(address.addr())) {
                let kind = MapKind { v6, with_address: m.host_ip.is_some() };
                elements.push((
                    kind,
                    Element {
                        key: element_key(m.protocol, m.host_ip, m.host_port),
                        value: Some(element_value(address.addr(), m.container_port)),
                        comment: Some(note.clone()),
                    },
                ));
            }
        }
        with_shared(|client| {
            let mut whole = !in_place(client)?;
            loop {
                let mut batch = Batch::new();
                if whole {
                    skeleton(&mut batch);
                }
                // What this attachment had (an ADD repeated) is replaced.
                queue_removal(client, &mut batch, &|comment| comment.starts_with(&tag))?;
                for kind in MAPS {
                    let mine: Vec<Element> =
                        elements.iter().filter(|(k, _)| *k == kind).map(|(_, e)| e.clone()).collect();
                    if !mine.is_empty() {
                        batch.add_elements(Family::Inet, TABLE, kind.name(), &mine, true);
                    }
                }
                if c.snat {
                    for address in p.addresses {
                        for rule in masquerade_rules(*address, c.masq_all) {
                            batch.add_rule(Family::Inet, TABLE, POSTROUTING, &rule, Some(&note));
                        }
                    }
                }
                match client.commit(batch) {
                    // The table went away between the look and the write: write all of it.
                    Err(e) if e.errno == libc::ENOENT && !whole => whole = true,
                    other => return other,
                }
            }
        })
        .map_err(|e| {
            if e.errno == libc::EEXIST {
                CniError::new(
                    PORT_TAKEN,
                    format!(
                        "a host port of container {} was published meanwhile by another attachment: {e}",
                        p.container_id
                    ),
                )
            } else {
                failed(e)
            }
        })
    }

    fn published(&self) -> CniResult<Vec<Published>> {
        let outcome = with_shared(|client| {
            let mut published = Vec::new();
            for kind in MAPS {
                let elements = client.elements(Family::Inet, TABLE, kind.name())?;
                published.extend(elements.iter().filter_map(|e| published_by(kind, e)));
            }
            Ok(published)
        });
        match outcome {
            Err(e) if absent(&e) => Ok(Vec::new()),
            other => other.map_err(failed),
        }
    }

    fn unpublish(&self, network: &str, doomed: &Doomed) -> CniResult<Vec<Published>> {
        let network_prefix = network_tag(network);
        let picks: Box<dyn Fn(&str) -> bool> = match doomed {
            Doomed::Attachment(id) => {
                let tag = attachment_tag(network, id);
                Box::new(move |comment: &str| comment.starts_with(&tag))
            }
            Doomed::AllBut(keep) => {
                let kept: Vec<String> = keep.iter().map(|id| attachment_tag(network, id)).collect();
                let of_network = format!("{network_prefix}-");
                Box::new(move |comment: &str| {
                    comment.starts_with(&of_network) && !kept.iter().any(|k| comment.starts_with(k.as_str()))
                })
            }
        };
        let outcome = with_shared(|client| {
            let mut batch = Batch::new();
            let removed = queue_removal(client, &mut batch, &*picks)?;
            client.commit(batch)?;
            Ok(removed)
        });
        match outcome {
            Err(e) if absent(&e) => Ok(Vec::new()),
            other => other.map_err(failed),
        }
    }
}
