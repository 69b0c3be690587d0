//! host-local's configuration, as the reference plugin reads it: `ranges` (sets of ranges,
//! one address from each set) or the older single `subnet`, with `rangeStart`, `rangeEnd`,
//! `gateway`, plus `routes`, `dataDir` and `resolvConf`.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde_json::Value;

use crate::error::{CniError, CniResult, INVALID_CONFIG};
use crate::result::{Dns, Route};

/// The reference plugin's store directory, so a node can switch binaries.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub subnet: IpNet,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: Option<IpAddr>,
}

impl Range {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.subnet.contains(&ip) && ip >= self.start && ip <= self.end
    }
}

#[derive(Debug, Clone)]
pub struct Ipam {
    pub network: String,
    pub range_sets: Vec<Vec<Range>>,
    pub routes: Vec<Route>,
    pub data_dir: PathBuf,
    pub resolv_conf: Option<PathBuf>,
}

fn invalid(msg: String) -> CniError {
    CniError::new(INVALID_CONFIG, msg)
}

fn parse_ip(v: &Value, what: &str) -> CniResult<Option<IpAddr>> {
    match v.as_str() {
        None => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| invalid(format!("{what} {s:?} is not an IP address"))),
    }
}

fn offset(ip: IpAddr, by: i128) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(((u32::from(v4) as i128 + by) as u32).into()),
        IpAddr::V6(v6) => IpAddr::V6(((u128::from(v6) as i128 + by) as u128).into()),
    }
}

/// The address after `ip`.
pub fn next(ip: IpAddr) -> IpAddr {
    offset(ip, 1)
}

fn parse_range(r: &Value) -> CniResult<Range> {
    let text = r["subnet"].as_str().ok_or_else(|| invalid("a range has no subnet".into()))?;
    let subnet: IpNet = text.parse().map_err(|_| invalid(format!("subnet {text:?} is not a CIDR")))?;
    let subnet = subnet.trunc();
    if subnet.prefix_len() >= subnet.max_prefix_len() - 1 {
        return Err(invalid(format!("subnet {subnet} is too small to allocate from")));
    }
    let last = match subnet {
        IpNet::V4(n) => offset(IpAddr::V4(n.broadcast()), -1),
        IpNet::V6(n) => IpAddr::V6(n.broadcast()),
    };
    let start = parse_ip(&r["rangeStart"], "rangeStart")?.unwrap_or_else(|| next(subnet.network()));
    let end = parse_ip(&r["rangeEnd"], "rangeEnd")?.unwrap_or(last);
    let gateway = parse_ip(&r["gateway"], "gateway")?.or_else(|| Some(next(subnet.network())));
    for (what, ip) in [("rangeStart", start), ("rangeEnd", end)] {
        if !subnet.contains(&ip) || ip < next(subnet.network()) || ip > last {
            return Err(invalid(format!("{what} {ip} is not a usable address of {subnet}")));
        }
    }
    if start > end {
        return Err(invalid(format!("rangeStart {start} is after rangeEnd {end}")));
    }
    Ok(Range { subnet, start, end, gateway })
}

impl Ipam {
    pub fn from_conf(conf: &Value) -> CniResult<Ipam> {
        let ipam = &conf["ipam"];
        let network = conf["name"].as_str().unwrap_or_default().to_string();
        if network.contains('/') || network == "." || network == ".." {
            return Err(invalid(format!("network name {network:?} cannot name a store directory")));
        }
        let mut range_sets = Vec::new();
        if let Some(sets) = ipam["ranges"].as_array() {
            for set in sets {
                let ranges = set.as_array().ok_or_else(|| invalid("each entry of ranges must be a list of ranges".into()))?;
                let parsed: Vec<Range> = ranges.iter().map(parse_range).collect::<CniResult<_>>()?;
                if parsed.is_empty() {
                    return Err(invalid("a range set is empty".into()));
                }
                range_sets.push(parsed);
            }
        } else if ipam["subnet"].is_string() {
            range_sets.push(vec![parse_range(ipam)?]);
        }
        if range_sets.is_empty() {
            return Err(invalid("no IP ranges specified".into()));
        }
        let mut routes = Vec::new();
        for r in ipam["routes"].as_array().into_iter().flatten() {
            let dst = r["dst"].as_str().and_then(|d| d.parse().ok()).ok_or_else(|| invalid(format!("route {r} has no valid dst")))?;
            routes.push(Route { dst, gw: parse_ip(&r["gw"], "route gw")? });
        }
        Ok(Ipam {
            network,
            range_sets,
            routes,
            data_dir: ipam["dataDir"].as_str().filter(|d| !d.is_empty()).unwrap_or(DEFAULT_DATA_DIR).into(),
            resolv_conf: ipam["resolvConf"].as_str().filter(|d| !d.is_empty()).map(PathBuf::from),
        })
    }

    /// DNS from `resolvConf` (nameserver, domain, search and options lines).
    pub fn dns(&self) -> CniResult<Dns> {
        let Some(path) = &self.resolv_conf else { return Ok(Dns::default()) };
        let text = std::fs::read_to_string(path).map_err(|e| CniError::io(format!("cannot read resolvConf {}", path.display()), e))?;
        let mut dns = Dns::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => dns.nameservers.extend(words.next().map(String::from)),
                Some("domain") => dns.domain = words.next().unwrap_or_default().to_string(),
                Some("search") => dns.search.extend(words.map(String::from)),
                Some("options") => dns.options.extend(words.map(String::from)),
                _ => {}
            }
        }
        Ok(dns)
    }
}
