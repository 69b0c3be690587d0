//! The bridge plugin: a Linux bridge on the host, a veth pair per attachment (one end in
//! the container, one on the bridge), addresses from the IPAM plugin, the bridge as gateway
//! and masquerading when asked; DEL undoes it even when the namespace or the interface is
//! gone, and a failed ADD leaves nothing behind. VLANs are bridge-port VLANs on a
//! filtering bridge; with a gateway on a VLAN, the gateway lives on a `<bridge>.<vlan>`
//! veth whose peer is a port of that VLAN, as in the reference plugin.

use std::net::IpAddr;
use std::os::fd::AsRawFd;

use ipnet::IpNet;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{CniError, CniResult, INVALID_CONFIG, IO_FAILURE, UNKNOWN_CONTAINER, UNSUPPORTED_FIELD};
use crate::firewall::{self, Attachment, Firewall};
use crate::netlink::route::{mac_text, random_mac, Link, RouteClient, VethPort};
use crate::netlink::NetlinkError;
use crate::result::{Interface, NetResult, Route};
use crate::skel::{Args, Plugin};
use crate::{ipam, netns, spoofcheck};

pub struct Bridge;

/// The reference plugin's keys.
struct BridgeConf {
    network: String,
    bridge: String,
    is_gateway: bool,
    is_default_gateway: bool,
    force_address: bool,
    ip_masq: bool,
    mtu: Option<u32>,
    hairpin: bool,
    promiscuous: bool,
    enable_dad: bool,
    disable_container_interface: bool,
    port_isolation: bool,
    /// The port's untagged VLAN (0: none).
    vlan: u16,
    /// Tagged VLANs the port carries too.
    vlan_trunk: Vec<u16>,
    preserve_default_vlan: bool,
    macspoofchk: bool,
    /// The masquerading backend `ipMasqBackend` names.
    firewall: Box<dyn Firewall>,
}

fn vlan_id(value: &Value, what: &str) -> CniResult<u16> {
    match value.as_i64() {
        Some(id) if (1..=4094).contains(&id) => Ok(id as u16),
        _ => Err(CniError::new(INVALID_CONFIG, format!("invalid VLAN ID {value} in {what} (must be between 1 and 4094)"))),
    }
}

/// `vlanTrunk`: a list of `{"id": N}` and `{"minID": A, "maxID": B}`, sorted, once each.
fn vlan_trunk(conf: &Value) -> CniResult<Vec<u16>> {
    let Some(items) = conf["vlanTrunk"].as_array() else { return Ok(Vec::new()) };
    let mut vlans = Vec::new();
    for item in items {
        if !item["minID"].is_null() || !item["maxID"].is_null() {
            let (low, high) = (vlan_id(&item["minID"], "vlanTrunk minID")?, vlan_id(&item["maxID"], "vlanTrunk maxID")?);
            if low > high {
                return Err(CniError::new(INVALID_CONFIG, format!("vlanTrunk range {low}-{high}: minID is above maxID")));
            }
            vlans.extend(low..=high);
        }
        if !item["id"].is_null() {
            vlans.push(vlan_id(&item["id"], "vlanTrunk id")?);
        }
    }
    if vlans.is_empty() {
        return Err(CniError::new(INVALID_CONFIG, "vlanTrunk names no VLAN: give {\"id\": N} or {\"minID\": A, \"maxID\": B}"));
    }
    vlans.sort_unstable();
    vlans.dedup();
    Ok(vlans)
}

impl BridgeConf {
    fn parse(conf: &Value) -> CniResult<BridgeConf> {
        let flag = |k: &str| conf[k].as_bool().unwrap_or(false);
        let vlan = match &conf["vlan"] {
            Value::Null => 0,
            v if v.as_i64() == Some(0) => 0,
            v => vlan_id(v, "vlan")?,
        };
        let bridge = conf["bridge"].as_str().unwrap_or("cni0").to_string();
        if bridge.is_empty() || bridge.len() > 15 || bridge.contains('/') {
            return Err(CniError::new(INVALID_CONFIG, format!("bridge name {bridge:?} is not a valid interface name")));
        }
        let is_default_gateway = flag("isDefaultGateway");
        Ok(BridgeConf {
            network: conf["name"].as_str().unwrap_or_default().to_string(),
            bridge,
            is_gateway: flag("isGateway") || is_default_gateway,
            is_default_gateway,
            force_address: flag("forceAddress"),
            ip_masq: flag("ipMasq"),
            mtu: conf["mtu"].as_u64().filter(|m| *m > 0).map(|m| m as u32),
            hairpin: flag("hairpinMode"),
            promiscuous: flag("promiscMode"),
            enable_dad: flag("enabledad"),
            disable_container_interface: flag("disableContainerInterface"),
            port_isolation: flag("portIsolation"),
            vlan,
            vlan_trunk: vlan_trunk(conf)?,
            preserve_default_vlan: flag("preserveDefaultVlan"),
            macspoofchk: flag("macspoofchk"),
            firewall: firewall::configured(conf)?,
        })
    }
}

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

impl BridgeConf {
    fn uses_vlans(&self) -> bool {
        self.vlan != 0 || !self.vlan_trunk.is_empty()
    }

    /// The VLANs of a port: its native one untagged, the trunk's tagged.
    fn port_vlans(&self) -> Vec<(u16, bool)> {
        let mut vlans: Vec<(u16, bool)> = self.vlan_trunk.iter().map(|v| (*v, false)).collect();
        match self.vlan {
            0 if !vlans.is_empty() => vlans.push((1, true)),
            0 => {}
            vlan => vlans.push((vlan, true)),
        }
        vlans
    }
}

/// Puts a bridge port on the configured VLANs, dropping the bridge's default one unless
/// asked to keep it.
fn join_vlans(host: &mut RouteClient, c: &BridgeConf, port: u32, bridge: &Link, vlans: &[(u16, bool)]) -> CniResult<()> {
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
            host.link(&c.bridge).map_err(nl)?.ok_or_else(|| CniError::new(IO_FAILURE, format!("bridge {} vanished", c.bridge)))?
        }
    };
    if !is_bridge(&link) {
        return Err(CniError::new(INVALID_CONFIG, format!("{} exists and is not a bridge", c.bridge)));
    }
    // The bridge owns its IPv6 routes: no router advertisements (absent without IPv6).
    let _ = write_sysctl(&format!("/proc/sys/net/ipv6/conf/{}/accept_ra", c.bridge), "0");
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
        return Err(CniError::new(INVALID_CONFIG, format!("the VLAN gateway's name {name} is longer than 15 characters; use a shorter bridge name")));
    }
    if let Some(link) = host.link(&name).map_err(nl)? {
        return Ok(link);
    }
    let port_name = format!("veth{}", &hex::encode(Sha256::digest(name.as_bytes()))[..8]);
    let host_ns = netns::open("/proc/thread-self/ns/net")?;
    // Its bridge end is the one made here, attached at once; the gateway end is the peer.
    let port = VethPort { name: &port_name, peer: &name, peer_netns: host_ns.as_raw_fd(), mtu: c.mtu, mac: None, peer_mac: None, controller: Some(bridge.index), up: false };
    match host.create_port(&port) {
        Err(e) if e.errno == libc::EEXIST => return host.link(&name).map_err(nl)?.ok_or_else(|| CniError::new(IO_FAILURE, format!("VLAN gateway {name} vanished"))),
        other => other.map_err(nl)?,
    }
    let port = host.link(&port_name).map_err(nl)?.ok_or_else(|| CniError::new(IO_FAILURE, format!("VLAN gateway port {port_name} did not arrive")))?;
    join_vlans(host, c, port.index, bridge, &[(c.vlan, true)])?;
    host.set_up(port.index).map_err(nl)?;
    let link = host.link(&name).map_err(nl)?.ok_or_else(|| CniError::new(IO_FAILURE, format!("VLAN gateway {name} vanished")))?;
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
        let wanted = IpNet::new(gw, ip.address.prefix_len()).map_err(|e| CniError::new(INVALID_CONFIG, e.to_string()))?;
        // The gateway is the host's own: usable at once, no IPv6 DAD wait.
        if !host.add_address(gateway.index, wanted, true).map_err(nl)? {
            continue;
        }
        let present = host.addresses(gateway.index).map_err(nl)?;
        for other in present.iter().filter(|p| **p != wanted && p.addr().is_ipv4() == gw.is_ipv4() && p.contains(&gw) && !p.addr().is_unicast_link_local_v6()) {
            if !c.force_address {
                let _ = host.delete_address(gateway.index, wanted);
                return Err(CniError::new(INVALID_CONFIG, format!("{} already has {other}, not {wanted}; set forceAddress to replace it", gateway.name)));
            }
            host.delete_address(gateway.index, *other).map_err(nl)?;
        }
        let forwarding = if gw.is_ipv4() { "/proc/sys/net/ipv4/ip_forward" } else { "/proc/sys/net/ipv6/conf/all/forwarding" };
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

/// The links of an ADD after IPAM: veth, bridge port, container addresses and routes,
/// gateway. Fills in the result's interfaces.
fn plumb(c: &BridgeConf, args: &Args, result: &mut NetResult) -> CniResult<()> {
    let container_ns = netns::open(&args.netns)?;
    let mut host = RouteClient::open().map_err(nl)?;
    let bridge = ensure_bridge(&mut host, c)?;
    let host_name = host_veth_name(&c.network, args);
    // The pair is made from the host, the host end on the bridge at once; it comes up at
    // once too unless VLANs or the spoof check must be in place first. Both MACs are chosen
    // here (as the kernel would: random, locally administered), so nothing needs reading
    // back in the usual case.
    let (host_mac, container_mac) = (random_mac(), random_mac());
    let early_up = !c.uses_vlans() && !c.macspoofchk;
    let port = VethPort { name: &host_name, peer: &args.ifname, peer_netns: container_ns.as_raw_fd(), mtu: c.mtu, mac: Some(host_mac), peer_mac: Some(container_mac), controller: Some(bridge.index), up: early_up };
    match host.create_port(&port) {
        Err(e) if e.errno == libc::EEXIST => {
            return Err(CniError::new(INVALID_CONFIG, format!("cannot make veth {host_name}/{}: {} already has an interface {} or the host one named {host_name} (left by an ADD without DEL?)", args.ifname, args.netns, args.ifname)));
        }
        other => other.map_err(nl)?,
    }
    if c.hairpin || c.port_isolation || !early_up {
        let index = host.link(&host_name).map_err(nl)?.ok_or_else(|| CniError::new(IO_FAILURE, format!("host veth {host_name} did not arrive")))?.index;
        if c.hairpin || c.port_isolation {
            host.set_bridge_port(index, c.hairpin, c.port_isolation).map_err(nl)?;
        }
        join_vlans(&mut host, c, index, &bridge, &c.port_vlans())?;
        if c.macspoofchk {
            spoofcheck::setup(&args.container_id, &args.ifname, &host_name, container_mac)?;
        }
        if !early_up {
            host.set_up(index).map_err(nl)?;
        }
    }
    netns::within(&container_ns, || {
        let mut inside = RouteClient::open().map_err(nl)?;
        let link = inside.link(&args.ifname).map_err(nl)?.ok_or_else(|| CniError::new(IO_FAILURE, format!("the container's veth {} did not arrive", args.ifname)))?;
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
                let gw = route.gw.or_else(|| result.ips.iter().find(|ip| ip.address.addr().is_ipv4() == route.dst.addr().is_ipv4()).and_then(|ip| ip.gateway));
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

fn attachment<'a>(c: &'a BridgeConf, args: &'a Args) -> Attachment<'a> {
    Attachment { network: &c.network, container_id: &args.container_id, ifname: &args.ifname }
}

/// Removes the container's veth (which takes the host end with it) if the namespace and
/// the interface are still there.
fn remove_veth(c: &BridgeConf, args: &Args) -> CniResult<()> {
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
fn remove_host_veth(c: &BridgeConf, args: &Args) -> CniResult<()> {
    let mut host = RouteClient::open().map_err(nl)?;
    if let Some(link) = host.link(&host_veth_name(&c.network, args)).map_err(nl)? {
        host.delete_link(link.index).map_err(nl)?;
    }
    Ok(())
}

impl Plugin for Bridge {
    fn add(&self, args: &Args, conf: &Value) -> CniResult<NetResult> {
        let c = BridgeConf::parse(conf)?;
        let mut result = ipam::add(args, conf)?;
        if c.is_default_gateway {
            for ip in &result.ips {
                if let Some(gw) = ip.gateway {
                    let dst: IpNet = if gw.is_ipv4() { "0.0.0.0/0".parse().unwrap() } else { "::/0".parse().unwrap() };
                    if !result.routes.iter().any(|r| r.dst == dst) {
                        result.routes.push(Route { dst, gw: Some(gw) });
                    }
                }
            }
        }
        // Masquerading is committed on a thread of its own while the links are made: both
        // are kernel work that grows with what exists (rules to validate, bridge ports).
        let addresses: Vec<IpNet> = result.ips.iter().map(|ip| ip.address).collect();
        let outcome = std::thread::scope(|scope| {
            let masquerading = c.ip_masq.then(|| scope.spawn(|| c.firewall.add_masquerade(&attachment(&c, args), &addresses)));
            let plumbed = plumb(&c, args, &mut result);
            let masqueraded = masquerading.map_or(Ok(()), |m| m.join().unwrap_or_else(|_| Err(CniError::new(IO_FAILURE, "the masquerade thread failed"))));
            plumbed.and(masqueraded)
        });
        if let Err(e) = outcome {
            // Nothing of a failed ADD stays: rules, veth, address.
            if c.ip_masq {
                let _ = c.firewall.del_masquerade(&attachment(&c, args), &addresses);
            }
            if c.macspoofchk {
                let _ = spoofcheck::teardown(&args.container_id, &args.ifname);
            }
            // Through the host end only: the ADD may have failed because the container
            // already had an interface of that name, which is not this ADD's to remove.
            let _ = remove_host_veth(&c, args);
            let _ = ipam::delegate("DEL", args, conf);
            return Err(e);
        }
        Ok(result)
    }

    fn del(&self, args: &Args, conf: &Value) -> CniResult<()> {
        let c = BridgeConf::parse(conf)?;
        // Best effort, everything attempted: address, firewall, spoof check, veth. Rules
        // are removed from both backends: the ADD may have used either. The veth goes on a
        // thread of its own: deleting a link waits for the kernel's grace periods, and the
        // rest is done meanwhile.
        std::thread::scope(|scope| {
            let removing = scope.spawn(|| remove_veth(&c, args));
            let released = ipam::delegate("DEL", args, conf).map(|_| ());
            let known: Vec<IpNet> = crate::skel::prev_result(conf).ok().flatten().map(|r| r.ips.iter().map(|ip| ip.address).collect()).unwrap_or_default();
            let mut unmasked = Ok(());
            if c.ip_masq {
                for backend in firewall::all() {
                    unmasked = unmasked.and(backend.del_masquerade(&attachment(&c, args), &known));
                }
            }
            let unchecked = if c.macspoofchk { spoofcheck::teardown(&args.container_id, &args.ifname) } else { Ok(()) };
            let removed = removing.join().unwrap_or_else(|_| Err(CniError::new(IO_FAILURE, "the veth removal thread failed")));
            released.and(unmasked).and(unchecked).and(removed)
        })
    }

    fn check(&self, args: &Args, conf: &Value) -> CniResult<()> {
        let c = BridgeConf::parse(conf)?;
        ipam::delegate("CHECK", args, conf)?;
        let ns = netns::open(&args.netns)?;
        let expected: Vec<IpNet> = crate::skel::prev_result(conf)?.map(|r| r.ips.iter().map(|ip| ip.address).collect()).unwrap_or_default();
        netns::within(&ns, || {
            let mut inside = RouteClient::open().map_err(nl)?;
            let link = inside.link(&args.ifname).map_err(nl)?.ok_or_else(|| CniError::new(UNKNOWN_CONTAINER, format!("interface {} is missing in {}", args.ifname, args.netns)))?;
            let present = inside.addresses(link.index).map_err(nl)?;
            if let Some(missing) = expected.iter().find(|a| !present.contains(a)) {
                return Err(CniError::new(UNKNOWN_CONTAINER, format!("{} lacks its address {missing}", args.ifname)));
            }
            Ok(())
        })?;
        let mut host = RouteClient::open().map_err(nl)?;
        let bridge = host.link(&c.bridge).map_err(nl)?.ok_or_else(|| CniError::new(UNKNOWN_CONTAINER, format!("bridge {} is missing", c.bridge)))?;
        let veth = host.link(&host_veth_name(&c.network, args)).map_err(nl)?.ok_or_else(|| CniError::new(UNKNOWN_CONTAINER, "the host end of the veth is missing"))?;
        if veth.controller != Some(bridge.index) {
            return Err(CniError::new(UNKNOWN_CONTAINER, format!("the host end of the veth is not on bridge {}", c.bridge)));
        }
        Ok(())
    }

    fn gc(&self, conf: &Value, valid: &[(String, String)]) -> CniResult<()> {
        let c = BridgeConf::parse(conf)?;
        for backend in firewall::all() {
            backend.gc_masquerade(&c.network, valid)?;
        }
        let args = crate::skel::Args::from_env();
        ipam::delegate("GC", &args, conf).map(|_| ())
    }

    fn status(&self, conf: &Value) -> CniResult<()> {
        BridgeConf::parse(conf)?;
        ipam::delegate("STATUS", &crate::skel::Args::from_env(), conf).map(|_| ())
    }
}
