//! The bridge plugin: a Linux bridge on the host, a veth pair per attachment (one end in
//! the container, one on the bridge), addresses from the IPAM plugin, the bridge as gateway
//! and masquerading when asked; DEL undoes it even when the namespace or the interface is
//! gone, and a failed ADD leaves nothing behind. VLANs are bridge-port VLANs on a
//! filtering bridge; with a gateway on a VLAN, the gateway lives on a `<bridge>.<vlan>`
//! veth whose peer is a port of that VLAN, as in the reference plugin.

mod config;
mod link;
mod masquerade;

use std::sync::{Arc, Mutex, PoisonError};

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

/// IPAM's part of an ADD: the addresses (with the default route when the bridge is the
/// default gateway), then their masquerading. An error is IPAM's refusal; otherwise the
/// addresses it gave come back also when masquerading failed, so that the ADD can release
/// them.
fn address(c: &BridgeConf, args: &Args, conf: &Value) -> CniResult<(Vec<IpNet>, CniResult<NetResult>)> {
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
    let addresses: Vec<IpNet> = result.ips.iter().map(|ip| ip.address).collect();
    let masqueraded = if c.ip_masq { masquerade::add(c, args, &addresses) } else { Ok(()) };
    Ok((addresses, masqueraded.map(|()| result)))
}

/// Runs `work` on a thread of its own while `meanwhile` runs on this one; returns both
/// results. On a busy machine the new thread may wait long for a CPU: if it has not taken
/// `work` by the time `meanwhile` is done, this thread runs `work` itself (the other one,
/// finding nothing left, ends), so the overlap never costs more than doing both in turn.
fn overlap<W: Send + 'static, M>(work: impl FnOnce() -> W + Send + 'static, meanwhile: impl FnOnce() -> M) -> (W, M) {
    let slot = Arc::new(Mutex::new(Some(work)));
    let take = |slot: &Mutex<Option<_>>| slot.lock().unwrap_or_else(PoisonError::into_inner).take();
    let helper = {
        let slot = slot.clone();
        std::thread::Builder::new().spawn(move || take(&slot).map(|work| work()))
    };
    let done = meanwhile();
    let worked = match take(&slot) {
        Some(work) => work(),
        // The helper took it: it was made, and ran it.
        None => match helper.expect("only a helper takes the work").join() {
            Ok(worked) => worked.expect("the helper ran the work it took"),
            Err(panic) => std::panic::resume_unwind(panic),
        },
    };
    (worked, done)
}

impl Plugin for Bridge {
    fn add(&self, args: &Args, conf: &Value) -> CniResult<NetResult> {
        let c = Arc::new(BridgeConf::parse(conf)?);
        // The veth is made while IPAM allocates and masquerading is committed: it is the
        // kernel's longest part of an ADD and needs no address (the reference plugin makes
        // it before asking IPAM too).
        let addressing = {
            let (c, args, conf) = (c.clone(), args.clone(), conf.clone());
            move || address(&c, &args, &conf)
        };
        let (addressed, port) = overlap(addressing, || link::make_port(&c, args));
        let (addresses, masqueraded) = match addressed {
            Ok(addressed) => addressed,
            Err(e) => {
                // IPAM refused: only this ADD's veth goes (the store is as IPAM left it).
                if port.is_ok() {
                    if c.macspoofchk {
                        let _ = spoofcheck::teardown(&args.container_id, &args.ifname);
                    }
                    let _ = link::remove_host_veth(&c, args);
                }
                return Err(e);
            }
        };
        let outcome = match (port, masqueraded) {
            (Ok(port), Ok(mut result)) => link::configure(&c, args, port, &mut result).map(|()| result),
            (Err(e), _) | (Ok(_), Err(e)) => Err(e),
        };
        if outcome.is_err() {
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
        }
        outcome
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
