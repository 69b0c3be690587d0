//! rtnetlink messages, built with `netlink-packet-route`, for links, bridge ports, addresses
//! and routes.

use std::net::IpAddr;
use std::os::fd::RawFd;

use ipnet::IpNet;
use netlink_packet_core::{
    DefaultNla, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{
    AfSpecBridge, AfSpecInet6, AfSpecUnspec, BridgeFlag, BridgeVlanInfo, BridgeVlanInfoFlags, InfoBridge, InfoData,
    InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, LinkProtoInfoBridge,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;

use super::socket::Socket;
use super::{NetlinkError, Result};

/// An rtnetlink client: links, bridge ports, addresses and routes.
pub struct RouteClient {
    socket: Socket,
}

/// A veth pair to create: the end `name` here, `peer` in the namespace `peer_netns` (with
/// the MACs given, if any); the end here attached to `controller` and up when asked.
pub struct VethPort<'a> {
    pub name: &'a str,
    pub peer: &'a str,
    pub peer_netns: RawFd,
    pub mtu: Option<u32>,
    pub mac: Option<[u8; 6]>,
    pub peer_mac: Option<[u8; 6]>,
    pub controller: Option<u32>,
    pub up: bool,
}

/// A random locally administered unicast MAC, as the kernel gives a new veth.
pub fn random_mac() -> [u8; 6] {
    let mut mac = [0u8; 6];
    // SAFETY: getrandom writes at most mac.len() bytes into mac.
    unsafe { libc::getrandom(mac.as_mut_ptr().cast(), mac.len(), 0) };
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

pub fn mac_text(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Settings of a link to change in one request; `None` leaves one as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkSettings {
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    pub txqlen: Option<u32>,
    pub promiscuous: Option<bool>,
    pub allmulti: Option<bool>,
}

/// A link as the plugins need it.
#[derive(Debug, Clone)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: String,
    pub mtu: u32,
    pub up: bool,
    pub promiscuous: bool,
    pub allmulti: bool,
    /// The transmit queue's length.
    pub txqlen: u32,
    pub controller: Option<u32>,
    pub kind: Option<InfoKind>,
    /// For a bridge: whether it filters by VLAN, and the VLAN new ports get untagged.
    pub vlan_filtering: bool,
    pub vlan_default_pvid: u16,
    /// Its IPv6 `accept_ra` setting (none when IPv6 is off for it).
    pub ipv6_accept_ra: Option<i32>,
}

impl RouteClient {
    /// A client in the current network namespace.
    pub fn open() -> Result<RouteClient> {
        let mut socket = Socket::open(NETLINK_ROUTE, "rtnetlink")?;
        // So that a bridge's addresses are read without listing those of every veth.
        socket.set_strict_checking();
        Ok(RouteClient { socket })
    }

    /// Sends one request and collects the answers until its ACK or end of dump.
    fn request(&mut self, message: RouteNetlinkMessage, flags: u16, what: &str) -> Result<Vec<RouteNetlinkMessage>> {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.socket.next_sequence();
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        let mut answers = Vec::new();
        for bytes in self.socket.request(&buf, header.sequence_number, what)? {
            let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes)
                .map_err(|e| NetlinkError { errno: 0, message: format!("{what}: unreadable answer: {e}") })?;
            if let NetlinkPayload::InnerMessage(m) = parsed.payload {
                answers.push(m);
            }
        }
        Ok(answers)
    }

    fn to_link(message: &LinkMessage) -> Link {
        let mut link = Link {
            index: message.header.index,
            name: String::new(),
            mac: String::new(),
            mtu: 0,
            up: message.header.flags.contains(LinkFlags::Up),
            promiscuous: message.header.flags.contains(LinkFlags::Promisc),
            allmulti: message.header.flags.contains(LinkFlags::Allmulti),
            txqlen: 0,
            controller: None,
            kind: None,
            vlan_filtering: false,
            vlan_default_pvid: 0,
            ipv6_accept_ra: None,
        };
        for attribute in &message.attributes {
            match attribute {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Address(a) => link.mac = mac_text(a),
                LinkAttribute::Mtu(m) => link.mtu = *m,
                LinkAttribute::TxQueueLen(q) => link.txqlen = *q,
                LinkAttribute::Controller(c) => link.controller = Some(*c),
                LinkAttribute::AfSpecUnspec(families) => {
                    for family in families {
                        if let AfSpecUnspec::Inet6(settings) = family {
                            for setting in settings {
                                if let AfSpecInet6::DevConf(conf) = setting {
                                    link.ipv6_accept_ra = Some(conf.accept_ra);
                                }
                            }
                        }
                    }
                }
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(k) => link.kind = Some(k.clone()),
                            LinkInfo::Data(InfoData::Bridge(options)) => {
                                for option in options {
                                    match option {
                                        InfoBridge::VlanFiltering(on) => link.vlan_filtering = *on,
                                        InfoBridge::VlanDefaultPvid(vid) => link.vlan_default_pvid = *vid,
                                        _ => {}
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }

    /// The link named `name`, if there is one.
    pub fn link(&mut self, name: &str) -> Result<Option<Link>> {
        let mut message = LinkMessage::default();
        message.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::GetLink(message), NLM_F_ACK, &format!("cannot look up link {name}")) {
            Ok(answers) => Ok(answers.iter().find_map(|a| {
                if let RouteNetlinkMessage::NewLink(m) = a {
                    Some(Self::to_link(m))
                } else {
                    None
                }
            })),
            Err(e) if e.errno == libc::ENODEV => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates a bridge; with `vlan_filtering` when VLANs are used. Its MAC is set (random,
    /// locally administered) so that it does not follow the lowest MAC among its ports, which
    /// would change as containers come and go.
    pub fn create_bridge(&mut self, name: &str, mtu: Option<u32>, vlan_filtering: bool) -> Result<()> {
        let mut message = LinkMessage::default();
        message.attributes.push(LinkAttribute::IfName(name.to_string()));
        message.attributes.push(LinkAttribute::Address(random_mac().to_vec()));
        if let Some(mtu) = mtu {
            message.attributes.push(LinkAttribute::Mtu(mtu));
        }
        let mut infos = vec![LinkInfo::Kind(InfoKind::Bridge)];
        if vlan_filtering {
            infos.push(LinkInfo::Data(InfoData::Bridge(vec![InfoBridge::VlanFiltering(true)])));
        }
        message.attributes.push(LinkAttribute::LinkInfo(infos));
        match self.request(
            RouteNetlinkMessage::NewLink(message),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            &format!("cannot create bridge {name}"),
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.errno == libc::EEXIST => Ok(()), // another ADD made it first
            Err(e) => Err(e),
        }
    }

    /// Creates a veth pair here: `name`, and `peer` placed in the namespace `peer_netns`.
    pub fn create_veth(&mut self, name: &str, peer: &str, peer_netns: RawFd, mtu: Option<u32>) -> Result<()> {
        self.create_port(&VethPort {
            name,
            peer,
            peer_netns,
            mtu,
            mac: None,
            peer_mac: None,
            controller: None,
            up: false,
        })
    }

    /// Creates a veth pair whose end here may join a bridge and come up in the same request
    /// (one trip through the kernel's lock instead of three). Each end has one transmit
    /// and one receive queue, the number a veth uses unless told otherwise: asked for no
    /// number, the kernel makes one queue per possible CPU and then cuts the ones in use
    /// down to one, waiting out an RCU grace period per end (half the kernel's work here).
    pub fn create_port(&mut self, port: &VethPort) -> Result<()> {
        let one_queue_each_way = [LinkAttribute::NumTxQueues(1), LinkAttribute::NumRxQueues(1)];
        let mut peer_message = LinkMessage::default();
        peer_message.attributes.push(LinkAttribute::IfName(port.peer.to_string()));
        peer_message.attributes.push(LinkAttribute::NetNsFd(port.peer_netns));
        peer_message.attributes.extend(one_queue_each_way.clone());
        if let Some(mac) = port.peer_mac {
            peer_message.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        let mut message = LinkMessage::default();
        message.attributes.push(LinkAttribute::IfName(port.name.to_string()));
        message.attributes.extend(one_queue_each_way);
        if let Some(mac) = port.mac {
            message.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        if let Some(mtu) = port.mtu {
            message.attributes.push(LinkAttribute::Mtu(mtu));
            peer_message.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(controller) = port.controller {
            message.attributes.push(LinkAttribute::Controller(controller));
        }
        if port.up {
            message.header.flags = LinkFlags::Up;
            message.header.change_mask = LinkFlags::Up;
        }
        message.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_message))),
        ]));
        self.request(
            RouteNetlinkMessage::NewLink(message),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            &format!("cannot create veth {}/{}", port.name, port.peer),
        )
        .map(|_| ())
    }

    fn set_link(
        &mut self,
        index: u32,
        header_flags: Option<(LinkFlags, LinkFlags)>,
        attributes: Vec<LinkAttribute>,
        what: &str,
    ) -> Result<()> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        if let Some((flags, mask)) = header_flags {
            message.header.flags = flags;
            message.header.change_mask = mask;
        }
        message.attributes = attributes;
        self.request(RouteNetlinkMessage::SetLink(message), NLM_F_ACK, what).map(|_| ())
    }

    pub fn set_up(&mut self, index: u32) -> Result<()> {
        self.set_link(index, Some((LinkFlags::Up, LinkFlags::Up)), Vec::new(), "cannot bring the link up")
    }

    pub fn set_down(&mut self, index: u32) -> Result<()> {
        self.set_link(index, Some((LinkFlags::empty(), LinkFlags::Up)), Vec::new(), "cannot take the link down")
    }

    pub fn set_promiscuous(&mut self, index: u32) -> Result<()> {
        self.set_link(
            index,
            Some((LinkFlags::Promisc, LinkFlags::Promisc)),
            Vec::new(),
            "cannot make the bridge promiscuous",
        )
    }

    pub fn set_controller(&mut self, index: u32, controller: u32) -> Result<()> {
        self.set_link(index, None, vec![LinkAttribute::Controller(controller)], "cannot attach the veth to the bridge")
    }

    /// Bridge-port options of a link attached to a bridge, through the bridge's protinfo
    /// as `bridge link set` sends them (in link info the kernel applied only the first).
    pub fn set_bridge_port(&mut self, index: u32, hairpin: bool, isolated: bool) -> Result<()> {
        const IFLA_BRPORT_MODE: u16 = 4;
        const IFLA_BRPORT_ISOLATED: u16 = 33;
        let mut message = LinkMessage::default();
        message.header.interface_family = AddressFamily::Bridge;
        message.header.index = index;
        let options = [(IFLA_BRPORT_MODE, hairpin), (IFLA_BRPORT_ISOLATED, isolated)];
        message.attributes.push(LinkAttribute::ProtoInfoBridge(
            options
                .iter()
                .map(|(kind, on)| LinkProtoInfoBridge::Other(DefaultNla::new(*kind, vec![*on as u8])))
                .collect(),
        ));
        self.request(
            RouteNetlinkMessage::SetLink(message),
            NLM_F_ACK,
            "cannot set the bridge port's hairpin mode and isolation",
        )
        .map(|_| ())
    }

    /// Turns VLAN filtering on for an existing bridge.
    pub fn set_vlan_filtering(&mut self, index: u32) -> Result<()> {
        let info = vec![
            LinkInfo::Kind(InfoKind::Bridge),
            LinkInfo::Data(InfoData::Bridge(vec![InfoBridge::VlanFiltering(true)])),
        ];
        self.set_link(index, None, vec![LinkAttribute::LinkInfo(info)], "cannot turn on the bridge's VLAN filtering")
    }

    /// Adds (or with `remove`, removes) VLANs on a bridge port, as `bridge vlan add/del
    /// ... master` does: each VLAN with whether it is the port's untagged native one.
    pub fn port_vlans(&mut self, index: u32, vlans: &[(u16, bool)], remove: bool) -> Result<()> {
        if vlans.is_empty() {
            return Ok(());
        }
        let mut message = LinkMessage::default();
        message.header.interface_family = AddressFamily::Bridge;
        message.header.index = index;
        let mut spec = vec![AfSpecBridge::Flags(BridgeFlag::Controller)];
        for (vid, native) in vlans {
            let flags = if *native {
                BridgeVlanInfoFlags::Pvid | BridgeVlanInfoFlags::Untagged
            } else {
                BridgeVlanInfoFlags::empty()
            };
            spec.push(AfSpecBridge::VlanInfo(BridgeVlanInfo { flags, vid: *vid }));
        }
        message.attributes.push(LinkAttribute::AfSpecBridge(spec));
        let (request, what) = if remove {
            (RouteNetlinkMessage::DelLink(message), "cannot remove VLANs from the bridge port")
        } else {
            (RouteNetlinkMessage::SetLink(message), "cannot add VLANs to the bridge port")
        };
        self.request(request, NLM_F_ACK, what).map(|_| ())
    }

    /// Deletes the link; one that went meanwhile (its peer's namespace being torn down,
    /// say) is as good as deleted.
    pub fn delete_link(&mut self, index: u32) -> Result<()> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        match self.request(RouteNetlinkMessage::DelLink(message), NLM_F_ACK, "cannot delete the link") {
            Err(e) if e.errno == libc::ENODEV => Ok(()),
            other => other.map(|_| ()),
        }
    }

    fn family(ip: &IpAddr) -> AddressFamily {
        if ip.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        }
    }

    /// The addresses on link `index`.
    pub fn addresses(&mut self, index: u32) -> Result<Vec<IpNet>> {
        let mut query = AddressMessage::default();
        query.header.index = index;
        let answers = self.request(RouteNetlinkMessage::GetAddress(query), NLM_F_DUMP, "cannot list addresses")?;
        let mut out = Vec::new();
        for answer in answers {
            if let RouteNetlinkMessage::NewAddress(m) = answer {
                if m.header.index != index {
                    continue;
                }
                for attribute in &m.attributes {
                    if let AddressAttribute::Address(ip) = attribute {
                        if let Ok(net) = IpNet::new(*ip, m.header.prefix_len) {
                            out.push(net);
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Adds `address` to link `index`; `nodad` skips IPv6 duplicate address detection, so
    /// the address is usable at once.
    /// Adds the address; false when the link has it already.
    pub fn add_address(&mut self, index: u32, address: IpNet, nodad: bool) -> Result<bool> {
        let mut message = AddressMessage::default();
        message.header.family = Self::family(&address.addr());
        if nodad && address.addr().is_ipv6() {
            message.header.flags = AddressHeaderFlags::Nodad;
        }
        message.header.prefix_len = address.prefix_len();
        message.header.index = index;
        message.attributes.push(AddressAttribute::Address(address.addr()));
        if address.addr().is_ipv4() {
            message.attributes.push(AddressAttribute::Local(address.addr()));
            if let IpNet::V4(v4) = address {
                message.attributes.push(AddressAttribute::Broadcast(v4.broadcast()));
            }
        }
        match self.request(
            RouteNetlinkMessage::NewAddress(message),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            &format!("cannot add address {address}"),
        ) {
            Err(e) if e.errno == libc::EEXIST => Ok(false),
            other => other.map(|_| true),
        }
    }

    pub fn delete_address(&mut self, index: u32, address: IpNet) -> Result<()> {
        let mut message = AddressMessage::default();
        message.header.family = Self::family(&address.addr());
        message.header.prefix_len = address.prefix_len();
        message.header.index = index;
        message.attributes.push(AddressAttribute::Address(address.addr()));
        self.request(RouteNetlinkMessage::DelAddress(message), NLM_F_ACK, &format!("cannot remove address {address}"))
            .map(|_| ())
    }

    /// The name of the interface the host routes `destination` out of, if it has a route.
    pub fn route_interface(&mut self, destination: IpAddr) -> Result<Option<String>> {
        let mut message = RouteMessage::default();
        message.header.address_family = Self::family(&destination);
        message.header.destination_prefix_length = if destination.is_ipv4() { 32 } else { 128 };
        message.attributes.push(RouteAttribute::Destination(match destination {
            IpAddr::V4(v4) => RouteAddress::Inet(v4),
            IpAddr::V6(v6) => RouteAddress::Inet6(v6),
        }));
        let answers = match self.request(
            RouteNetlinkMessage::GetRoute(message),
            NLM_F_ACK,
            &format!("cannot look up the route to {destination}"),
        ) {
            Ok(answers) => answers,
            Err(e) if [libc::ENETUNREACH, libc::EHOSTUNREACH].contains(&e.errno) => return Ok(None),
            Err(e) => return Err(e),
        };
        let oif = answers.iter().find_map(|a| match a {
            RouteNetlinkMessage::NewRoute(m) => m.attributes.iter().find_map(|attribute| match attribute {
                RouteAttribute::Oif(index) => Some(*index),
                _ => None,
            }),
            _ => None,
        });
        let Some(index) = oif else { return Ok(None) };
        let mut query = LinkMessage::default();
        query.header.index = index;
        let links = self.request(RouteNetlinkMessage::GetLink(query), NLM_F_ACK, "cannot look up the route's link")?;
        Ok(links.iter().find_map(|a| match a {
            RouteNetlinkMessage::NewLink(m) => Some(Self::to_link(m).name),
            _ => None,
        }))
    }

    /// A route to `dst` via `gateway` (or on-link) out of `oif`.
    pub fn add_route(&mut self, dst: IpNet, gateway: Option<IpAddr>, oif: u32) -> Result<()> {
        let mut message = RouteMessage::default();
        message.header.address_family = Self::family(&dst.addr());
        message.header.destination_prefix_length = dst.prefix_len();
        message.header.table = netlink_packet_route::route::RouteHeader::RT_TABLE_MAIN;
        message.header.protocol = RouteProtocol::Boot;
        message.header.scope = if gateway.is_some() { RouteScope::Universe } else { RouteScope::Link };
        message.header.kind = RouteType::Unicast;
        let address = |ip: IpAddr| match ip {
            IpAddr::V4(v4) => RouteAddress::Inet(v4),
            IpAddr::V6(v6) => RouteAddress::Inet6(v6),
        };
        if dst.prefix_len() > 0 {
            message.attributes.push(RouteAttribute::Destination(address(dst.network())));
        }
        if let Some(gw) = gateway {
            message.attributes.push(RouteAttribute::Gateway(address(gw)));
        }
        message.attributes.push(RouteAttribute::Oif(oif));
        match self.request(
            RouteNetlinkMessage::NewRoute(message),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            &format!("cannot add route to {dst}"),
        ) {
            Err(e) if e.errno == libc::EEXIST => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Changes the link's MAC, MTU, queue length and promiscuous and all-multicast modes
    /// (those `settings` name) in one request.
    pub fn tune_link(&mut self, index: u32, settings: &LinkSettings) -> Result<()> {
        let mut flags = LinkFlags::empty();
        let mut mask = LinkFlags::empty();
        for (setting, flag) in [(settings.promiscuous, LinkFlags::Promisc), (settings.allmulti, LinkFlags::Allmulti)] {
            if let Some(on) = setting {
                mask |= flag;
                if on {
                    flags |= flag;
                }
            }
        }
        let mut attributes = Vec::new();
        if let Some(mac) = settings.mac {
            attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        if let Some(mtu) = settings.mtu {
            attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(txqlen) = settings.txqlen {
            attributes.push(LinkAttribute::TxQueueLen(txqlen));
        }
        let header_flags = (!mask.is_empty()).then_some((flags, mask));
        self.set_link(index, header_flags, attributes, &format!("cannot change link {index}'s settings {settings:?}"))
    }
}
