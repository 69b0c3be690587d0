//! Connection tracking over ctnetlink (NETLINK_NETFILTER, no `conntrack` process): the
//! table's entries listed by original tuple, and entries deleted by that tuple. portmap
//! uses it to drop stale UDP entries of the ports it publishes or unpublishes, which would
//! otherwise keep steering datagrams by the old rules.

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP};
use netlink_sys::protocols::NETLINK_NETFILTER;

use super::nftables::{attributes_of, parse_attributes};
use super::socket::{begin_message, end_message, Socket};
use super::Result;

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_DST_PORT: u16 = 3;
const NLA_F_NESTED: u16 = 1 << 15;

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// An entry as listed: where its first packet went, and what identifies it for deletion.
#[derive(Debug, Clone)]
pub struct Entry {
    pub protocol: u8,
    pub destination: Option<IpAddr>,
    pub destination_port: u16,
    /// The original tuple's attribute payload and the zone, sent back to delete it.
    tuple: Vec<u8>,
    zone: Option<Vec<u8>>,
}

pub struct ConntrackClient {
    socket: Socket,
}

fn request(kind: u16, flags: u16, sequence: u32, family: u8, fill: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut buffer = Vec::with_capacity(128);
    let start = begin_message(&mut buffer, (NFNL_SUBSYS_CTNETLINK << 8) | kind, flags, sequence);
    buffer.extend_from_slice(&[family, 0, 0, 0]);
    fill(&mut buffer);
    end_message(&mut buffer, start);
    buffer
}

fn put(buffer: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let length = 4 + data.len();
    buffer.extend_from_slice(&(length as u16).to_ne_bytes());
    buffer.extend_from_slice(&kind.to_ne_bytes());
    buffer.extend_from_slice(data);
    buffer.resize(buffer.len() + (4 - length % 4) % 4, 0);
}

fn entry_of(answer: &[u8]) -> Option<Entry> {
    let attributes = parse_attributes(attributes_of(answer));
    let tuple = attributes.iter().find(|(k, _)| *k == CTA_TUPLE_ORIG)?.1;
    let zone = attributes.iter().find(|(k, _)| *k == CTA_ZONE).map(|(_, v)| v.to_vec());
    let mut entry = Entry { protocol: 0, destination: None, destination_port: 0, tuple: tuple.to_vec(), zone };
    for (kind, nested) in parse_attributes(tuple) {
        for (field, value) in parse_attributes(nested) {
            match (kind, field) {
                (CTA_TUPLE_IP, CTA_IP_V4_DST) if value.len() == 4 => {
                    entry.destination = Some(IpAddr::from(<[u8; 4]>::try_from(value).ok()?))
                }
                (CTA_TUPLE_IP, CTA_IP_V6_DST) if value.len() == 16 => {
                    entry.destination = Some(IpAddr::from(<[u8; 16]>::try_from(value).ok()?))
                }
                (CTA_TUPLE_PROTO, CTA_PROTO_NUM) if !value.is_empty() => entry.protocol = value[0],
                (CTA_TUPLE_PROTO, CTA_PROTO_DST_PORT) if value.len() == 2 => {
                    entry.destination_port = u16::from_be_bytes([value[0], value[1]])
                }
                _ => {}
            }
        }
    }
    Some(entry)
}

impl ConntrackClient {
    /// A client in the current network namespace.
    pub fn open() -> Result<ConntrackClient> {
        Ok(ConntrackClient { socket: Socket::open(NETLINK_NETFILTER, "ctnetlink")? })
    }

    /// Every entry of the family (`libc::AF_INET` or `AF_INET6`).
    pub fn entries(&mut self, family: u8) -> Result<Vec<Entry>> {
        let sequence = self.socket.next_sequence();
        let message = request(IPCTNL_MSG_CT_GET, NLM_F_DUMP, sequence, family, |_| {});
        let answers = self.socket.request(&message, sequence, "cannot list the conntrack entries")?;
        Ok(answers.iter().filter_map(|a| entry_of(a)).collect())
    }

    /// Deletes the entry; one gone meanwhile is as good as deleted.
    pub fn delete(&mut self, family: u8, entry: &Entry) -> Result<()> {
        let sequence = self.socket.next_sequence();
        let message = request(IPCTNL_MSG_CT_DELETE, NLM_F_ACK, sequence, family, |buffer| {
            put(buffer, CTA_TUPLE_ORIG | NLA_F_NESTED, &entry.tuple);
            if let Some(zone) = &entry.zone {
                put(buffer, CTA_ZONE, zone);
            }
        });
        match self.socket.request(&message, sequence, "cannot delete a conntrack entry") {
            Err(e) if e.errno == libc::ENOENT => Ok(()),
            other => other.map(|_| ()),
        }
    }
}
