//! The host-local IPAM plugin: one address from each range set per attachment, kept in the
//! reference plugin's store format; GC frees the addresses of attachments not listed.

pub mod config;
pub mod store;

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

use crate::error::{CniError, CniResult, NOT_AVAILABLE, NO_ADDRESS_LEFT, UNKNOWN_CONTAINER};
use crate::result::{IpConfig, NetResult};
use crate::skel::{Args, Plugin};
use config::{next, Ipam, Range};
use store::Store;

pub struct HostLocal;

/// The first free address of `set` after the last one reserved (wrapping once), skipping
/// gateways, reserved for the attachment.
fn allocate<'a>(
    store: &mut Store,
    set_index: usize,
    set: &'a [Range],
    id: &str,
    ifname: &str,
) -> CniResult<(IpAddr, &'a Range)> {
    let start_at = store
        .last_reserved(set_index)
        .and_then(|last| set.iter().position(|r| r.contains(last)).map(|i| (i, next(last))));
    let (mut range_index, mut candidate) = start_at.unwrap_or((0, set[0].start));
    // Each range is visited once from its start, plus the partial first one again.
    for _ in 0..=set.len() {
        let range = &set[range_index];
        if !range.contains(candidate) {
            candidate = range.start;
        }
        while range.contains(candidate) {
            if Some(candidate) != range.gateway && store.reserve(id, ifname, candidate, set_index)? {
                return Ok((candidate, range));
            }
            candidate = next(candidate);
        }
        range_index = (range_index + 1) % set.len();
        candidate = set[range_index].start;
    }
    let spans: Vec<String> = set.iter().map(|r| format!("{}-{}", r.start, r.end)).collect();
    Err(CniError::new(NO_ADDRESS_LEFT, format!("no IP addresses available in range set: {}", spans.join(","))))
}

impl Plugin for HostLocal {
    fn add(&self, args: &Args, conf: &Value) -> CniResult<NetResult> {
        let ipam = Ipam::from_conf(conf)?;
        let dns = ipam.dns()?;
        let mut store = Store::open(&ipam.data_dir, &ipam.network)?;
        let held = store.get_by_id(&args.container_id, &args.ifname)?;
        let mut result = NetResult { routes: ipam.routes.clone(), dns, ..Default::default() };
        for (index, set) in ipam.range_sets.iter().enumerate() {
            if let Some(ip) = held.iter().find(|ip| set.iter().any(|r| r.contains(**ip))) {
                // Undo this call's reservations: a failed ADD leaks nothing.
                for done in &result.ips {
                    let _ =
                        std::fs::remove_file(ipam.data_dir.join(&ipam.network).join(done.address.addr().to_string()));
                }
                return Err(CniError::new(crate::error::INVALID_CONFIG, format!("failed to allocate for range {index}: {ip} has been allocated to {}, duplicate allocation is not allowed", args.container_id)));
            }
            match allocate(&mut store, index, set, &args.container_id, &args.ifname) {
                Ok((ip, range)) => result.ips.push(IpConfig {
                    address: IpNet::new(ip, range.subnet.prefix_len()).expect("a prefix of the subnet"),
                    gateway: range.gateway,
                    interface: None,
                }),
                Err(e) => {
                    let _ = store.release_by_id(&args.container_id, &args.ifname);
                    return Err(e.with_details(format!("range set {index} of network {}", ipam.network)));
                }
            }
        }
        Ok(result)
    }

    fn del(&self, args: &Args, conf: &Value) -> CniResult<()> {
        let ipam = Ipam::from_conf(conf)?;
        let mut store = Store::open(&ipam.data_dir, &ipam.network)?;
        store.release_by_id(&args.container_id, &args.ifname).map(|_| ())
    }

    fn check(&self, args: &Args, conf: &Value) -> CniResult<()> {
        let ipam = Ipam::from_conf(conf)?;
        let mut store = Store::open(&ipam.data_dir, &ipam.network)?;
        let held = store.get_by_id(&args.container_id, &args.ifname)?;
        for (index, set) in ipam.range_sets.iter().enumerate() {
            if !held.iter().any(|ip| set.iter().any(|r| r.contains(*ip))) {
                return Err(CniError::new(
                    UNKNOWN_CONTAINER,
                    format!(
                        "host-local: container {} ({}) holds no address from range set {index}",
                        args.container_id, args.ifname
                    ),
                ));
            }
        }
        Ok(())
    }

    fn gc(&self, conf: &Value, valid: &[(String, String)]) -> CniResult<()> {
        let ipam = Ipam::from_conf(conf)?;
        let mut store = Store::open(&ipam.data_dir, &ipam.network)?;
        store
            .release_unless(|id, ifname| {
                valid.iter().any(|(v_id, v_if)| v_id == id && (v_if == ifname || ifname.is_empty()))
            })
            .map(|_| ())
    }

    fn status(&self, conf: &Value) -> CniResult<()> {
        let ipam = Ipam::from_conf(conf)?;
        let store = Store::open(&ipam.data_dir, &ipam.network)?;
        let capacity: u128 =
            ipam.range_sets.iter().map(|set| set.iter().map(range_size).sum::<u128>()).min().unwrap_or(0);
        if (store.reserved_count()? as u128) >= capacity {
            return Err(CniError::new(NOT_AVAILABLE, format!("network {} has no free address left", ipam.network)));
        }
        Ok(())
    }
}

/// Allocatable addresses of a range (its gateway excluded).
fn range_size(range: &Range) -> u128 {
    let as_number = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    };
    let span = as_number(range.end) - as_number(range.start) + 1;
    span - range.gateway.filter(|g| range.contains(*g)).map_or(0, |_| 1)
}
