//! The portmap plugin: publishes a container's ports on the host (DNAT from prerouting and
//! output, masquerading for hairpin and localhost traffic, `route_localnet` on the
//! container's host interface), chained after the plugin that gave the container its
//! addresses, whose result it passes on unchanged. Two backends: nftables (berth's own
//! table, a container's ports as elements of maps) and iptables (the reference plugin's
//! chains). Stale UDP conntrack entries of the ports are flushed at ADD and at DEL. DEL
//! needs neither the namespace nor a prevResult: everything is found by network and
//! container id, in both backends.
//!
//! Beyond the reference: a host address, port and protocol another attachment publishes
//! already is refused at ADD, naming the holder. A port merely bound by a listening socket
//! on the host is not refused: podman (and Docker's proxy) bind the host port themselves
//! before the plugin runs, to reserve it, and a plugin cannot tell such a reservation from
//! another program's socket (the socket belongs to the runtime at ADD and to conmon later,
//! so no process or ancestry test holds across runtimes); refusing it would refuse every
//! podman `-p`.

pub mod config;
mod iptables;
mod nftables;

use std::net::IpAddr;
use std::os::fd::AsRawFd;

use ipnet::IpNet;
use serde_json::Value;

use crate::error::{CniError, CniResult, INVALID_CONFIG, IO_FAILURE, PORT_TAKEN, UNKNOWN_CONTAINER};
use crate::netlink::conntrack::{ConntrackClient, PROTO_UDP};
use crate::netlink::route::RouteClient;
use crate::result::NetResult;
use crate::skel::{Args, Plugin};
use config::{container_addresses, BackendKind, Mapping, PortMapConf, Protocol};

pub struct PortMap;

/// A published port as a backend holds it: whose, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub network: String,
    pub container_id: String,
    pub protocol: Protocol,
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    /// The nftables backend's tag of the attachment, which identifies it when the names in
    /// the comment were cut short.
    pub tag: Option<String>,
}

impl Published {
    /// Whether this is the attachment's own.
    pub fn is_of(&self, network: &str, container_id: &str) -> bool {
        match &self.tag {
            Some(tag) => *tag == nftables::attachment_tag(network, container_id),
            None => self.network == network && self.container_id == container_id,
        }
    }
}

/// One container's mappings to write: whose, the container's addresses and the config.
pub struct Publication<'a> {
    pub conf: &'a PortMapConf,
    pub container_id: &'a str,
    pub addresses: &'a [IpNet],
}

/// Whose publications to remove: one attachment's (DEL), or every attachment of the network
/// but those listed (GC).
pub enum Doomed<'a> {
    Attachment(&'a str),
    AllBut(&'a [String]),
}

/// A firewall that publishes ports.
pub trait Backend {
    /// Writes the publication in one transaction (replacing what the same attachment had).
    fn publish(&self, publication: &Publication) -> CniResult<()>;
    /// Every port published through this backend.
    fn published(&self) -> CniResult<Vec<Published>>;
    /// Removes the network's publications `doomed` picks; returns what they published.
    fn unpublish(&self, network: &str, doomed: &Doomed) -> CniResult<Vec<Published>>;
}

fn backend(kind: BackendKind) -> Box<dyn Backend> {
    match kind {
        BackendKind::Nftables => Box::new(nftables::Nftables),
        BackendKind::Iptables => Box::new(iptables::Iptables),
    }
}

/// Both backends: removal looks in each (the ADD may have used either, or come from another
/// version of the config).
fn every_backend() -> [Box<dyn Backend>; 2] {
    [Box::new(nftables::Nftables), Box::new(iptables::Iptables)]
}

/// Held while one ADD checks for conflicts and writes its ports, so two ADDs cannot both
/// take a port; the flock goes with the file.
struct PublishLock {
    _held: std::fs::File,
}

fn lock() -> CniResult<PublishLock> {
    const PATH: &str = "/run/berth-cni-portmap.lock";
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(PATH)
        .map_err(|e| CniError::io(format!("cannot open the lock {PATH}"), e))?;
    // SAFETY: flock on a descriptor this process holds.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(CniError::io(format!("cannot lock {PATH}"), std::io::Error::last_os_error()));
    }
    Ok(PublishLock { _held: file })
}

/// Whether two publications of the same protocol and port collide: the same address, or
/// either on every address.
fn collides(mapping: &Mapping, held: &Published) -> bool {
    mapping.protocol == held.protocol
        && mapping.host_port == held.host_port
        && match (mapping.host_ip, held.host_ip) {
            (Some(a), Some(b)) => a == b,
            // A mapping on every address (of its family, when an unspecified hostIP was given).
            (None, Some(b)) => mapping.host_ip_given.is_none_or(|g| g.is_ipv4() == b.is_ipv4()),
            (Some(_), None) | (None, None) => true,
        }
}

/// Refuses a mapping that another attachment publishes already, in either backend.
fn refuse_conflicts(c: &PortMapConf, container_id: &str) -> CniResult<()> {
    let mut held = Vec::new();
    for backend in every_backend() {
        held.extend(backend.published()?);
    }
    for mapping in &c.mappings {
        let theirs = held.iter().find(|h| !h.is_of(c.network(), container_id) && collides(mapping, h));
        if let Some(holder) = theirs {
            let address = mapping.host_ip.map_or("every address".to_string(), |ip| ip.to_string());
            return Err(CniError::new(
                PORT_TAKEN,
                format!(
                    "host port {}/{} on {address} is published already by container {} on network {}; choose another host port or remove that container",
                    mapping.host_port,
                    mapping.protocol.name(),
                    holder.container_id,
                    holder.network
                ),
            ));
        }
    }
    Ok(())
}

/// Lets 127.0.0.1 cross into the container's network: `route_localnet` on the host
/// interface the container's IPv4 address is routed through, as the reference does.
fn enable_localnet_routing(address: IpAddr) -> CniResult<()> {
    let interface = RouteClient::open()
        .and_then(|mut client| client.route_interface(address))
        .map_err(|e| CniError::new(IO_FAILURE, e.message))?;
    if let Some(interface) = interface {
        let path = format!("/proc/sys/net/ipv4/conf/{interface}/route_localnet");
        std::fs::write(&path, "1").map_err(|e| CniError::io(format!("cannot set {path}"), e))?;
    }
    Ok(())
}

/// Deletes the UDP conntrack entries to the published ports, so that datagrams of a flow
/// seen before the rules changed follow the new ones. Failures are reported on stderr only:
/// the ports are published (or removed) either way.
fn flush_udp_conntrack(ports: &[(Option<IpAddr>, u16)]) {
    if ports.is_empty() {
        return;
    }
    let outcome = ConntrackClient::open().and_then(|mut client| {
        for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
            for entry in client.entries(family)? {
                let stale = entry.protocol == PROTO_UDP
                    && ports.iter().any(|(ip, port)| {
                        *port == entry.destination_port && ip.is_none_or(|ip| Some(ip) == entry.destination)
                    });
                if stale {
                    client.delete(family, &entry)?;
                }
            }
        }
        Ok(())
    });
    if let Err(e) = outcome {
        eprintln!("portmap: cannot flush the stale UDP conntrack entries: {e}");
    }
}

/// The UDP (host address, port) pairs among (protocol, host address, port).
fn udp_ports(published: impl IntoIterator<Item = (Protocol, Option<IpAddr>, u16)>) -> Vec<(Option<IpAddr>, u16)> {
    let mut ports: Vec<(Option<IpAddr>, u16)> =
        published.into_iter().filter(|(p, _, _)| *p == Protocol::Udp).map(|(_, ip, port)| (ip, port)).collect();
    ports.sort();
    ports.dedup();
    ports
}

/// Removes what `doomed` picks from both backends, then the UDP conntrack entries of the
/// ports they published.
fn unpublish_everywhere(network: &str, doomed: &Doomed) -> CniResult<()> {
    let mut removed = Vec::new();
    let mut outcome = Ok(());
    for backend in every_backend() {
        match backend.unpublish(network, doomed) {
            Ok(gone) => removed.extend(gone),
            Err(e) => outcome = outcome.and(Err(e)),
        }
    }
    flush_udp_conntrack(&udp_ports(removed.iter().map(|p| (p.protocol, p.host_ip, p.host_port))));
    outcome
}

impl Plugin for PortMap {
    fn add(&self, args: &Args, conf: &Value) -> CniResult<NetResult> {
        let c = PortMapConf::parse(conf)?;
        let result = c.net.prev_result()?.ok_or_else(|| {
            CniError::new(INVALID_CONFIG, "portmap must be called as a chained plugin (no prevResult)")
        })?;
        let addresses = container_addresses(&result, &args.ifname);
        if c.mappings.is_empty() || addresses.is_empty() {
            return Ok(result);
        }
        {
            let _held = lock()?;
            refuse_conflicts(&c, &args.container_id)?;
            backend(c.backend).publish(&Publication {
                conf: &c,
                container_id: &args.container_id,
                addresses: &addresses,
            })?;
        }
        if c.snat {
            if let Some(v4) = addresses.iter().find(|a| a.addr().is_ipv4()) {
                enable_localnet_routing(v4.addr())?;
            }
        }
        flush_udp_conntrack(&udp_ports(c.mappings.iter().map(|m| (m.protocol, m.host_ip, m.host_port))));
        Ok(result)
    }

    fn del(&self, args: &Args, conf: &Value) -> CniResult<()> {
        let c = PortMapConf::parse(conf)?;
        unpublish_everywhere(c.network(), &Doomed::Attachment(&args.container_id))
    }

    fn check(&self, args: &Args, conf: &Value) -> CniResult<()> {
        let c = PortMapConf::parse(conf)?;
        let result =
            c.net.prev_result()?.ok_or_else(|| CniError::new(INVALID_CONFIG, "portmap CHECK needs the prevResult"))?;
        let addresses = container_addresses(&result, &args.ifname);
        let published = backend(c.backend).published()?;
        let mine = |m: &Mapping| {
            published.iter().any(|p| {
                p.is_of(c.network(), &args.container_id)
                    && p.protocol == m.protocol
                    && p.host_port == m.host_port
                    && p.host_ip == m.host_ip
            })
        };
        // Only mappings of a family the container has an address of were published.
        let mut expected = c.mappings.iter().filter(|m| addresses.iter().any(|a| m.applies_to(a.addr())));
        match expected.find(|m| !mine(m)) {
            Some(missing) => Err(CniError::new(
                UNKNOWN_CONTAINER,
                format!(
                    "host port {}/{} of container {} is not published",
                    missing.host_port,
                    missing.protocol.name(),
                    args.container_id
                ),
            )),
            None => Ok(()),
        }
    }

    fn gc(&self, conf: &Value, valid: &[(String, String)]) -> CniResult<()> {
        let c = PortMapConf::parse(conf)?;
        let keep: Vec<String> = valid.iter().map(|(id, _)| id.clone()).collect();
        unpublish_everywhere(c.network(), &Doomed::AllBut(&keep))
    }

    fn status(&self, conf: &Value) -> CniResult<()> {
        let c = PortMapConf::parse(conf)?;
        // The configured backend can be read: nf_tables answers, or iptables-save runs.
        backend(c.backend).published().map(|_| ())
    }
}
