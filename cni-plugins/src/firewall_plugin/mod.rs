//! The firewall plugin (CNI `type` "firewall"), chained after bridge: lets the container's
//! traffic through the host's filter table (iptables backend) or puts its addresses in a
//! firewalld zone, and with `ingressPolicy` "same-bridge" isolates its bridge from other
//! bridges. Its addresses come from the prevResult and are recorded so that DEL (also
//! without a prevResult or netns, also repeated) and GC remove exactly its rules.

mod config;
mod firewalld;
pub mod iptables;
mod record;

use std::net::IpAddr;

use serde_json::Value;

use crate::error::{CniError, CniResult, INVALID_CONFIG};
use crate::result::NetResult;
use crate::skel::{Args, Plugin};
use config::{Backend, FirewallConf, IngressPolicy};
use iptables::Family;

pub struct Firewall;

/// The prevResult ADD and CHECK work from.
fn required_prev_result(c: &FirewallConf) -> CniResult<NetResult> {
    c.net.prev_result()?.ok_or_else(|| {
        CniError::new(
            INVALID_CONFIG,
            "the firewall plugin needs a prevResult: chain it after a plugin that makes the interface (bridge)",
        )
    })
}

fn addresses_of(result: &NetResult) -> Vec<IpAddr> {
    result.ips.iter().map(|ip| ip.address.addr()).collect()
}

fn of_family(addresses: &[IpAddr], family: Family) -> Vec<IpAddr> {
    addresses.iter().filter(|a| Family::of(a) == family).copied().collect()
}

/// The bridge `same-bridge` isolates: the prevResult's first interface, as bridge reports it.
fn isolated_bridge<'a>(c: &FirewallConf, result: &'a NetResult) -> CniResult<Option<&'a str>> {
    if c.ingress_policy != IngressPolicy::SameBridge {
        return Ok(None);
    }
    match result.interfaces.first().map(|i| i.name.as_str()) {
        Some(name) if !name.is_empty() => Ok(Some(name)),
        _ => Err(CniError::new(
            INVALID_CONFIG,
            "ingressPolicy \"same-bridge\" needs the bridge's name as the prevResult's first interface: chain the firewall plugin after bridge",
        )),
    }
}

/// Removes what the plugin opened for `addresses` with the configured backend.
fn close(c: &FirewallConf, addresses: &[IpAddr]) -> CniResult<()> {
    match &c.backend {
        Backend::Iptables { .. } => {
            [Family::V4, Family::V6].into_iter().try_for_each(|f| iptables::del(f, &of_family(addresses, f)))
        }
        Backend::Firewalld { zone } => {
            firewalld::del(zone, addresses);
            Ok(())
        }
    }
}

fn open(c: &FirewallConf, addresses: &[IpAddr], bridge: Option<&str>) -> CniResult<()> {
    if let Backend::Firewalld { zone } = &c.backend {
        firewalld::add(zone, addresses)?;
    }
    let admin_chain = match &c.backend {
        Backend::Iptables { admin_chain } => Some(admin_chain.as_str()),
        Backend::Firewalld { .. } => None,
    };
    for family in [Family::V4, Family::V6] {
        let attachment = iptables::Attachment {
            family,
            addresses: of_family(addresses, family),
            admin_chain,
            isolated_bridge: bridge,
        };
        iptables::add(&attachment)?;
    }
    Ok(())
}

impl Plugin for Firewall {
    fn add(&self, args: &Args, conf: &Value) -> CniResult<NetResult> {
        let c = FirewallConf::parse(conf, firewalld::running, false)?;
        let result = required_prev_result(&c)?;
        let addresses = addresses_of(&result);
        let bridge = isolated_bridge(&c, &result)?;
        // Recorded first, so that a DEL after a failed ADD finds what it opened.
        record::save(&c.net.name, &args.container_id, &args.ifname, &addresses)?;
        if let Err(e) = open(&c, &addresses, bridge) {
            let _ = close(&c, &addresses);
            record::remove(&c.net.name, &args.container_id, &args.ifname);
            return Err(e);
        }
        Ok(result)
    }

    fn del(&self, args: &Args, conf: &Value) -> CniResult<()> {
        let c = FirewallConf::parse(conf, firewalld::running, true)?;
        let mut addresses = record::load(&c.net.name, &args.container_id, &args.ifname);
        // A malformed prevResult does not stop a DEL: the record has the addresses too.
        for address in c.net.prev_result().ok().flatten().map(|r| addresses_of(&r)).unwrap_or_default() {
            if !addresses.contains(&address) {
                addresses.push(address);
            }
        }
        close(&c, &addresses)?;
        // The isolation rules are the bridge's, shared by its containers: they stay, as
        // the reference leaves them.
        record::remove(&c.net.name, &args.container_id, &args.ifname);
        Ok(())
    }

    fn check(&self, _args: &Args, conf: &Value) -> CniResult<()> {
        let c = FirewallConf::parse(conf, firewalld::running, false)?;
        let addresses = addresses_of(&required_prev_result(&c)?);
        match &c.backend {
            Backend::Iptables { admin_chain } => [Family::V4, Family::V6].into_iter().try_for_each(|family| {
                iptables::check(&iptables::Attachment {
                    family,
                    addresses: of_family(&addresses, family),
                    admin_chain: Some(admin_chain),
                    isolated_bridge: None,
                })
            }),
            Backend::Firewalld { zone } => firewalld::check(zone, &addresses),
        }
    }

    fn gc(&self, conf: &Value, valid: &[(String, String)]) -> CniResult<()> {
        let c = FirewallConf::parse(conf, firewalld::running, true)?;
        let recorded = record::all(&c.net.name);
        let is_valid = |id: &str, ifname: &str| valid.iter().any(|(v_id, v_if)| v_id == id && v_if == ifname);
        // An address a valid attachment holds stays open, even if a stale record lists it too.
        let kept: Vec<IpAddr> = recorded
            .iter()
            .filter(|(id, ifname, _)| is_valid(id, ifname))
            .flat_map(|(_, _, addresses)| addresses.iter().copied())
            .collect();
        for (id, ifname, addresses) in recorded.iter().filter(|(id, ifname, _)| !is_valid(id, ifname)) {
            let stale: Vec<IpAddr> = addresses.iter().filter(|a| !kept.contains(a)).copied().collect();
            close(&c, &stale)?;
            record::remove(&c.net.name, id, ifname);
        }
        Ok(())
    }

    fn status(&self, conf: &Value) -> CniResult<()> {
        // Ready when the configured backend can be used: a config naming firewalld is
        // refused while firewalld is not running.
        FirewallConf::parse(conf, firewalld::running, false).map(|_| ())
    }
}
