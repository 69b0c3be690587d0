//! The bridge plugin: a Linux bridge on the host, a veth pair per attachment (one end in
//! the container, one on the bridge), addresses from the IPAM plugin, the bridge as gateway
//! and masquerading when asked; DEL undoes it even when the namespace or the interface is
//! gone, and a failed ADD leaves nothing behind. VLANs are bridge-port VLANs on a
//! filtering bridge; with a gateway on a VLAN, the gateway lives on a `<bridge>.<vlan>`
//! veth whose peer is a port of that VLAN, as in the reference plugin.

mod config;
mod link;
mod masquerade;

use ipnet::IpNet;
use serde_json::Value;

use crate::error::{CniError, CniResult, IO_FAILURE};
use crate::result::{NetResult, Route};
use crate::skel::{Args, Plugin};
use crate::{ipam, spoofcheck};
use config::BridgeConf;

pub struct Bridge;

/// The addresses of the config's prevResult (none without one).
fn known_addresses(c: &BridgeConf) -> CniResult<Vec<IpNet>> {
    Ok(c.net.prev_result()?.map(|r| r.ips.iter().map(|ip| ip.address).collect()).unwrap_or_default())
}

impl Plugin for Bridge {
    fn add(&self, args: &Args, conf: &Value) -> CniResult<NetResult> {
        let c = BridgeConf::parse(conf)?;
        let mut result = ipam::add(args, c.ipam(conf))?;
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
            let masquerading = c.ip_masq.then(|| scope.spawn(|| masquerade::add(&c, args, &addresses)));
            let plumbed = link::plumb(&c, args, &mut result);
            let masqueraded = masquerading.map_or(Ok(()), |m| {
                m.join().unwrap_or_else(|_| Err(CniError::new(IO_FAILURE, "the masquerade thread failed")))
            });
            plumbed.and(masqueraded)
        });
        if let Err(e) = outcome {
            // Nothing of a failed ADD stays: rules, veth, address.
            if c.ip_masq {
                let _ = masquerade::undo(&c, args, &addresses);
            }
            if c.macspoofchk {
                let _ = spoofcheck::teardown(&args.container_id, &args.ifname);
            }
            // Through the host end only: the ADD may have failed because the container
            // already had an interface of that name, which is not this ADD's to remove.
            let _ = link::remove_host_veth(&c, args);
            let _ = ipam::delegate("DEL", args, c.ipam(conf));
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
            let removing = scope.spawn(|| link::remove_veth(&c, args));
            let released = ipam::delegate("DEL", args, c.ipam(conf)).map(|_| ());
            let unmasked =
                if c.ip_masq { masquerade::del(&c, args, &known_addresses(&c).unwrap_or_default()) } else { Ok(()) };
            let unchecked = if c.macspoofchk { spoofcheck::teardown(&args.container_id, &args.ifname) } else { Ok(()) };
            let removed =
                removing.join().unwrap_or_else(|_| Err(CniError::new(IO_FAILURE, "the veth removal thread failed")));
            released.and(unmasked).and(unchecked).and(removed)
        })
    }

    fn check(&self, args: &Args, conf: &Value) -> CniResult<()> {
        let c = BridgeConf::parse(conf)?;
        ipam::delegate("CHECK", args, c.ipam(conf))?;
        link::verify(&c, args, &known_addresses(&c)?)
    }

    fn gc(&self, conf: &Value, valid: &[(String, String)]) -> CniResult<()> {
        let c = BridgeConf::parse(conf)?;
        masquerade::gc(&c, valid)?;
        ipam::delegate("GC", &Args::from_env(), c.ipam(conf)).map(|_| ())
    }

    fn status(&self, conf: &Value) -> CniResult<()> {
        let c = BridgeConf::parse(conf)?;
        ipam::delegate("STATUS", &Args::from_env(), c.ipam(conf)).map(|_| ())
    }
}
