//! The bridge's link work over netlink: the bridge itself, the veth pair and its port
//! settings (hairpin, isolation, VLANs, spoof check), the container side's addresses and
//! routes, the gateway (on a `<bridge>.<vlan>` veth for a VLAN), and their removal and
//! checking.

use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

use ipnet::IpNet;
use sha2::{Digest, Sha256};

use super::config::BridgeConf;
use crate::error::{CniError, CniResult, INVALID_CONFIG, IO_FAILURE, UNKNOWN_CONTAINER, UNSUPPORTED_FIELD};
use crate::netlink::route::{mac_text, random_mac, Link, RouteClient, VethPort};
use crate::netlink::NetlinkError;
use crate::result::{Interface, NetResult};
use crate::skel::Args;
use crate::{netns, spoofcheck};

fn nl(e: NetlinkError) -> CniError {
    CniError::new(IO_FAILURE, e.message)
}

/// The host end's name: stable for the attachment, so DEL and CHECK find it.
fn host_veth_name(network: &str, args: &Args) -> String {
    let digest = hex::encode(Sha256::digest(format!("{network}\0{}\0{}", args.container_id, args.ifname).as_bytes()));
    format!("veth{}", &digest[..8])
}

fn write_sysctl(path: &str, value: &str) -> CniResult<()> {
    std::fs::write(path, value).map_err(|e| CniError::io(format!("cannot set {path}"), e))
}

/// Puts a bridge port on the configured VLANs, dropping the bridge's default one unless
/// asked to keep it.
fn join_vlans(
    host: &mut RouteClient,
    c: &BridgeConf,
    port: u32,
    bridge: &Link,
    vlans: &[(u16, bool)],
) -> CniResult<()> {
    if vlans.is_empty() {
        return Ok(());
    }
    if !c.preserve_default_vlan && bridge.vlan_default_pvid != 0 {
        match host.port_vlans(port, &[(bridge.vlan_default_pvid, false)], true) {
            Err(e) if e.errno != libc::ENOENT => return Err(nl(e)),
            _ => {}
        }
    }
    host.port_vlans(port, vlans, false).map_err(nl)
}

/// The bridge, created when missing (filtering VLANs when they are used), up.
fn ensure_bridge(host: &mut RouteClient, c: &BridgeConf) -> CniResult<Link> {
    // A kernel whose bridges cannot filter VLANs refuses to turn filtering on.
    let filtering = |outcome: Result<(), NetlinkError>| match outcome {
        Err(e) if e.errno == libc::EOPNOTSUPP && c.uses_vlans() => {
            let value = if c.vlan != 0 { format!("vlan {}", c.vlan) } else { "vlanTrunk".to_string() };
            Err(CniError::new(UNSUPPORTED_FIELD, format!("{value}: this kernel's bridges cannot filter VLANs (built without CONFIG_BRIDGE_VLAN_FILTERING); leave out vlan and vlanTrunk on this host")))
        }
        other => other.map_err(nl),
    };
    let is_bridge = |link: &Link| link.kind == Some(netlink_packet_route::link::InfoKind::Bridge);
    // An existing bridge is read once; a new one (or one another ADD made first) is read
    // after its creation.
    let link = match host.link(&c.bridge).map_err(nl)? {
        Some(link) => {
            if is_bridge(&link) && c.uses_vlans() && !link.vlan_filtering {
                filtering(host.set_vlan_filtering(link.index))?;
            }
            link
        }
        None => {
            filtering(host.create_bridge(&c.bridge, c.mtu, c.uses_vlans()))?;
            host.link(&c.bridge)
                .map_err(nl)?
                .ok_or_else(|| CniError::new(IO_FAILURE, format!("bridge {} vanished", c.bridge)))?
        }
    };
    if !is_bridge(&link) {
        return Err(CniError::new(INVALID_CONFIG, format!("{} exists and is not a bridge", c.bridge)));
    }
    // The bridge owns its IPv6 routes: no router advertisements. The setting comes with
    // the link, so it is written only when it is not 0 already (and not without IPv6).
    if link.ipv6_accept_ra.is_some_and(|accept| accept != 0) {
        let _ = write_sysctl(&format!("/proc/sys/net/ipv6/conf/{}/accept_ra", c.bridge), "0");
    }
    if c.promiscuous && !link.promiscuous {
        host.set_promiscuous(link.index).map_err(nl)?;
    }
    if !link.up {
        host.set_up(link.index).map_err(nl)?;
    }
    Ok(link)
}

/// The gateway's interface for a VLAN: the `<bridge>.<vlan>` end of a veth whose other end
/// is a bridge port on that VLAN, made when missing.
fn ensure_vlan_gateway(host: &mut RouteClient, c: &BridgeConf, bridge: &Link) -> CniResult<Link> {
    let name = format!("{}.{}", c.bridge, c.vlan);
    if name.len() > 15 {
        return Err(CniError::new(
            INVALID_CONFIG,
            format!("the VLAN gateway's name {name} is longer than 15 characters; use a shorter bridge name"),
        ));
    }
    if let Some(link) = host.link(&name).map_err(nl)? {
        return Ok(link);
    }
    let port_name = format!("veth{}", &hex::encode(Sha256::digest(name.as_bytes()))[..8]);
    let host_ns = netns::open("/proc/thread-self/ns/net")?;
    // Its bridge end is the one made here, attached at once; the gateway end is the peer.
    let port = VethPort {
        name: &port_name,
        peer: &name,
        peer_netns: host_ns.as_raw_fd(),
        mtu: c.mtu,
        mac: None,
        peer_mac: None,
        controller: Some(bridge.index),
        up: false,
    };
    match host.create_port(&port) {
        Err(e) if e.errno == libc::EEXIST => {
            return host
                .link(&name)
                .map_err(nl)?
                .ok_or_else(|| CniError::new(IO_FAILURE, format!("VLAN gateway {name} vanished")))
        }
        other => other.map_err(nl)?,
    }
    let port = host
        .link(&port_name)
        .map_err(nl)?
        .ok_or_else(|| CniError::new(IO_FAILURE, format!("VLAN gateway port {port_name} did not arrive")))?;
    join_vlans(host, c, port.index, bridge, &[(c.vlan, true)])?;
    host.set_up(port.index).map_err(nl)?;
    let link = host
        .link(&name)
        .map_err(nl)?
        .ok_or_else(|| CniError::new(IO_FAILURE, format!("VLAN gateway {name} vanished")))?;
    host.set_up(link.index).map_err(nl)?;
    Ok(link)
}

/// Gives the gateway interface the gateway address of each family (replacing another one
/// of its subnet only with forceAddress) and turns on forwarding. Asking to add the address
/// tells whether it is there already, so the usual case reads no address list (which grows
/// with every veth).
fn ensure_gateway(host: &mut RouteClient, c: &BridgeConf, gateway: &Link, result: &NetResult) -> CniResult<()> {
    for ip in &result.ips {
        let Some(gw) = ip.gateway else { continue };
        let wanted =
            IpNet::new(gw, ip.address.prefix_len()).map_err(|e| CniError::new(INVALID_CONFIG, e.to_string()))?;
        // The gateway is the host's own: usable at once, no IPv6 DAD wait.
        if !host.add_address(gateway.index, wanted, true).map_err(nl)? {
            continue;
        }
        let present = host.addresses(gateway.index).map_err(nl)?;
        for other in present.iter().filter(|p| {
            **p != wanted
                && p.addr().is_ipv4() == gw.is_ipv4()
                && p.contains(&gw)
                && !p.addr().is_unicast_link_local_v6()
        }) {
            if !c.force_address {
                let _ = host.delete_address(gateway.index, wanted);
                return Err(CniError::new(
                    INVALID_CONFIG,
                    format!("{} already has {other}, not {wanted}; set forceAddress to replace it", gateway.name),
                ));
            }
            host.delete_address(gateway.index, *other).map_err(nl)?;
        }
        let forwarding =
            if gw.is_ipv4() { "/proc/sys/net/ipv4/ip_forward" } else { "/proc/sys/net/ipv6/conf/all/forwarding" };
        write_sysctl(forwarding, "1")?;
    }
    Ok(())
}

trait LinkLocal {
    fn is_unicast_link_local_v6(&self) -> bool;
}

impl LinkLocal for IpAddr {
    fn is_unicast_link_local_v6(&self) -> bool {
        matches!(self, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
    }
}

/// An attachment's veth as `make_port` leaves it: on the bridge, its container end not
/// yet addressed.
pub struct Port {
    container_ns: File,
    host: RouteClient,
    bridge: Link,
    host_name: String,
    host_mac: [u8; 6],
    container_mac: [u8; 6],
}

/// The link work of an ADD that needs no address, so it runs while IPAM allocates: the
/// bridge, the veth with its host end on it, the port's settings. A failure leaves no veth
/// of this ADD behind (one that was there already, in the way, stays).
pub fn make_port(c: &BridgeConf, args: &Args) -> CniResult<Port> {
    let container_ns = netns::open(&args.netns)?;
    let mut host = RouteClient::open().map_err(nl)?;
    let bridge = ensure_bridge(&mut host, c)?;
    let host_name = host_veth_name(c.network(), args);
    // The pair is made from the host, the host end on the bridge at once; it comes up at
    // once too unless VLANs or the spoof check must be in place first. Both MACs are chosen
    // here (as the kernel would: random, locally administered), so nothing needs reading
    // back in the usual case.
    let (host_mac, container_mac) = (random_mac(), random_mac());
    let early_up = !c.uses_vlans() && !c.macspoofchk;
    let veth = VethPort {
        name: &host_name,
        peer: &args.ifname,
        peer_netns: container_ns.as_raw_fd(),
        mtu: c.mtu,
        mac: Some(host_mac),
        peer_mac: Some(container_mac),
        controller: Some(bridge.index),
        up: early_up,
    };
    match host.create_port(&veth) {
        Err(e) if e.errno == libc::EEXIST => {
            return Err(CniError::new(INVALID_CONFIG, format!("cannot make veth {host_name}/{}: {} already has an interface {} or the host one named {host_name} (left by an ADD without DEL?)", args.ifname, args.netns, args.ifname)));
        }
        other => other.map_err(nl)?,
    }
    let mut port = Port { container_ns, host, bridge, host_name, host_mac, container_mac };
    if c.hairpin || c.port_isolation || !early_up {
        if let Err(e) = configure_port(c, args, &mut port, early_up) {
            if c.macspoofchk {
                let _ = spoofcheck::teardown(&args.container_id, &args.ifname);
            }
            let _ = remove_host_veth(c, args);
            return Err(e);
        }
    }
    Ok(port)
}

/// The settings of a new port that need it made first: hairpin and isolation, VLANs, the
/// spoof check, then up.
fn configure_port(c: &BridgeConf, args: &Args, port: &mut Port, early_up: bool) -> CniResult<()> {
    let host = &mut port.host;
    let index = host
        .link(&port.host_name)
        .map_err(nl)?
        .ok_or_else(|| CniError::new(IO_FAILURE, format!("host veth {} did not arrive", port.host_name)))?
        .index;
    if c.hairpin || c.port_isolation {
        host.set_bridge_port(index, c.hairpin, c.port_isolation).map_err(nl)?;
    }
    join_vlans(host, c, index, &port.bridge, &c.port_vlans())?;
    if c.macspoofchk {
        spoofcheck::setup(&args.container_id, &args.ifname, &port.host_name, port.container_mac)?;
    }
    if !early_up {
        host.set_up(index).map_err(nl)?;
    }
    Ok(())
}

/// The rest of an ADD once IPAM has answered: the container end's addresses, state and
/// routes, and the gateway. Fills in the result's interfaces.
pub fn configure(c: &BridgeConf, args: &Args, port: Port, result: &mut NetResult) -> CniResult<()> {
    let Port { container_ns, mut host, bridge, host_name, host_mac, container_mac } = port;
    netns::within(&container_ns, || {
        let mut inside = RouteClient::open().map_err(nl)?;
        let link = inside
            .link(&args.ifname)
            .map_err(nl)?
            .ok_or_else(|| CniError::new(IO_FAILURE, format!("the container's veth {} did not arrive", args.ifname)))?;
        let has_v6 = result.ips.iter().any(|ip| ip.address.addr().is_ipv6());
        if has_v6 && !c.enable_dad {
            write_sysctl(&format!("/proc/sys/net/ipv6/conf/{}/accept_dad", args.ifname), "0")?;
        }
        if !c.disable_container_interface {
            for ip in &result.ips {
                inside.add_address(link.index, ip.address, !c.enable_dad).map_err(nl)?;
            }
            inside.set_up(link.index).map_err(nl)?;
            for route in &result.routes {
                let gw = route.gw.or_else(|| {
                    result
                        .ips
                        .iter()
                        .find(|ip| ip.address.addr().is_ipv4() == route.dst.addr().is_ipv4())
                        .and_then(|ip| ip.gateway)
                });
                inside.add_route(route.dst, gw, link.index).map_err(nl)?;
            }
        }
        Ok(())
    })?;
    let mut vlan_gateway = None;
    if c.is_gateway && result.ips.iter().any(|ip| ip.gateway.is_some()) {
        let gateway = if c.vlan != 0 { ensure_vlan_gateway(&mut host, c, &bridge)? } else { bridge.clone() };
        ensure_gateway(&mut host, c, &gateway, result)?;
        vlan_gateway = (c.vlan != 0).then_some(gateway);
    }
    result.interfaces = vec![
        Interface { name: c.bridge.clone(), mac: bridge.mac, sandbox: None },
        Interface { name: host_name, mac: mac_text(&host_mac), sandbox: None },
        Interface { name: args.ifname.clone(), mac: mac_text(&container_mac), sandbox: Some(args.netns.clone()) },
    ];
    if let Some(gateway) = vlan_gateway {
        result.interfaces.push(Interface { name: gateway.name, mac: gateway.mac, sandbox: None });
    }
    for ip in &mut result.ips {
        ip.interface = Some(2);
    }
    Ok(())
}

/// Removes the container's veth (which takes the host end with it) if the namespace and
/// the interface are still there.
pub fn remove_veth(c: &BridgeConf, args: &Args) -> CniResult<()> {
    if !args.netns.is_empty() {
        if let Ok(ns) = netns::open(&args.netns) {
            netns::within(&ns, || {
                let mut inside = RouteClient::open().map_err(nl)?;
                if let Some(link) = inside.link(&args.ifname).map_err(nl)? {
                    inside.delete_link(link.index).map_err(nl)?;
                }
                Ok(())
            })?;
        }
    }
    // A host end whose peer went with its namespace is gone already; one left over is removed.
    remove_host_veth(c, args)
}

/// Removes the pair through its host end (named for this attachment, so never another's).
pub fn remove_host_veth(c: &BridgeConf, args: &Args) -> CniResult<()> {
    let mut host = RouteClient::open().map_err(nl)?;
    if let Some(link) = host.link(&host_veth_name(c.network(), args)).map_err(nl)? {
        host.delete_link(link.index).map_err(nl)?;
    }
    Ok(())
}

/// CHECK's link side: the container's interface with its `expected` addresses, and the host
/// end of its veth on the bridge.
pub fn verify(c: &BridgeConf, args: &Args, expected: &[IpNet]) -> CniResult<()> {
    let ns = netns::open(&args.netns)?;
    netns::within(&ns, || {
        let mut inside = RouteClient::open().map_err(nl)?;
        let link = inside.link(&args.ifname).map_err(nl)?.ok_or_else(|| {
            CniError::new(UNKNOWN_CONTAINER, format!("interface {} is missing in {}", args.ifname, args.netns))
        })?;
        let present = inside.addresses(link.index).map_err(nl)?;
        if let Some(missing) = expected.iter().find(|a| !present.contains(a)) {
            return Err(CniError::new(UNKNOWN_CONTAINER, format!("{} lacks its address {missing}", args.ifname)));
        }
        Ok(())
    })?;
    let mut host = RouteClient::open().map_err(nl)?;
    let bridge = host
        .link(&c.bridge)
        .map_err(nl)?
        .ok_or_else(|| CniError::new(UNKNOWN_CONTAINER, format!("bridge {} is missing", c.bridge)))?;
    let veth = host
        .link(&host_veth_name(c.network(), args))
        .map_err(nl)?
        .ok_or_else(|| CniError::new(UNKNOWN_CONTAINER, "the host end of the veth is missing"))?;
    if veth.controller != Some(bridge.index) {
        return Err(CniError::new(
            UNKNOWN_CONTAINER,
            format!("the host end of the veth is not on bridge {}", c.bridge),
        ));
    }
    Ok(())
}
