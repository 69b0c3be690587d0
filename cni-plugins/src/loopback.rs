//! The loopback plugin: brings `lo` up in the container's namespace and reports it; DEL
//! takes it down when the namespace is still there and succeeds when it is gone.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde_json::Value;

use crate::error::{CniError, CniResult, IO_FAILURE};
use crate::netlink::route::{Link, RouteClient};
use crate::result::{Interface, IpConfig, NetResult};
use crate::skel::{Args, Plugin};

pub struct Loopback;

/// `lo` of the current namespace.
fn lo(client: &mut RouteClient) -> CniResult<Link> {
    client.link("lo")?.ok_or_else(|| CniError::new(IO_FAILURE, "the container's namespace has no lo"))
}

/// Brings `lo` of the current namespace up or down.
fn set_lo_up(up: bool) -> CniResult<()> {
    let mut client = RouteClient::open()?;
    let index = lo(&mut client)?.index;
    if up {
        client.set_up(index)?
    } else {
        client.set_down(index)?
    }
    Ok(())
}

impl Plugin for Loopback {
    fn add(&self, args: &Args, _conf: &Value) -> CniResult<NetResult> {
        crate::netns::enter(&args.netns)?;
        set_lo_up(true)?;
        let mut ips = vec![IpConfig {
            address: IpNet::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8).unwrap(),
            gateway: None,
            interface: Some(0),
        }];
        // ::1 exists only where IPv6 is enabled in the namespace.
        if std::fs::read_to_string("/proc/net/if_inet6").map(|t| t.lines().any(|l| l.ends_with(" lo"))).unwrap_or(false)
        {
            ips.push(IpConfig {
                address: IpNet::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 128).unwrap(),
                gateway: None,
                interface: Some(0),
            });
        }
        Ok(NetResult {
            interfaces: vec![Interface {
                name: "lo".into(),
                mac: "00:00:00:00:00:00".into(),
                sandbox: Some(args.netns.clone()),
            }],
            ips,
            ..Default::default()
        })
    }

    fn del(&self, args: &Args, _conf: &Value) -> CniResult<()> {
        // A namespace already gone has nothing left to undo.
        if args.netns.is_empty() || crate::netns::enter(&args.netns).is_err() {
            return Ok(());
        }
        set_lo_up(false)
    }

    fn check(&self, args: &Args, _conf: &Value) -> CniResult<()> {
        crate::netns::enter(&args.netns)?;
        if lo(&mut RouteClient::open()?)?.up {
            Ok(())
        } else {
            Err(CniError::new(IO_FAILURE, "lo is down in the container's namespace"))
        }
    }

    fn gc(&self, _conf: &Value, _valid: &[(String, String)]) -> CniResult<()> {
        Ok(()) // loopback keeps nothing outside the namespace
    }

    fn status(&self, _conf: &Value) -> CniResult<()> {
        Ok(())
    }
}
