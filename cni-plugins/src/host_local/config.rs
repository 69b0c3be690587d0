//! host-local's configuration, as the reference plugin reads it: `ranges` (sets of ranges,
//! one address from each set) or the older single `subnet`, with `rangeStart`, `rangeEnd`,
//! `gateway`, plus `routes`, `dataDir` and `resolvConf`.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;

use crate::conf::NetConf;
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

/// host-local's keys: the common ones and the `ipam` section.
#[derive(Debug, Deserialize)]
struct HostLocalConf {
    #[serde(flatten)]
    net: NetConf,
    #[serde(default)]
    ipam: IpamConf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IpamConf {
    ranges: Option<Vec<Vec<RangeConf>>>,
    // The older single range, spelled out in the section itself (not flattened: serde
    // would lose these keys' names in an error).
    subnet: Option<IpNet>,
    range_start: Option<IpAddr>,
    range_end: Option<IpAddr>,
    gateway: Option<IpAddr>,
    #[serde(default)]
    routes: Vec<Route>,
    data_dir: Option<String>,
    resolv_conf: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RangeConf {
    subnet: Option<IpNet>,
    range_start: Option<IpAddr>,
    range_end: Option<IpAddr>,
    gateway: Option<IpAddr>,
}

fn invalid(msg: String) -> CniError {
    CniError::new(INVALID_CONFIG, msg)
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

fn parse_range(r: &RangeConf) -> CniResult<Range> {
    let subnet = r.subnet.ok_or_else(|| invalid("a range has no subnet".into()))?.trunc();
    if subnet.prefix_len() >= subnet.max_prefix_len() - 1 {
        return Err(invalid(format!("subnet {subnet} is too small to allocate from")));
    }
    let last = match subnet {
        IpNet::V4(n) => offset(IpAddr::V4(n.broadcast()), -1),
        IpNet::V6(n) => IpAddr::V6(n.broadcast()),
    };
    let start = r.range_start.unwrap_or_else(|| next(subnet.network()));
    let end = r.range_end.unwrap_or(last);
    let gateway = r.gateway.or_else(|| Some(next(subnet.network())));
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
    pub fn from_conf(json: &Value) -> CniResult<Ipam> {
        let HostLocalConf { net, ipam } = crate::conf::parse(json)?;
        let network = net.name;
        if network.contains('/') || network == "." || network == ".." {
            return Err(invalid(format!("network name {network:?} cannot name a store directory")));
        }
        let mut range_sets = Vec::new();
        if let Some(sets) = &ipam.ranges {
            for set in sets {
                let parsed: Vec<Range> = set.iter().map(parse_range).collect::<CniResult<_>>()?;
                if parsed.is_empty() {
                    return Err(invalid("a range set is empty".into()));
                }
                range_sets.push(parsed);
            }
        } else if ipam.subnet.is_some() {
            let single = RangeConf {
                subnet: ipam.subnet,
                range_start: ipam.range_start,
                range_end: ipam.range_end,
                gateway: ipam.gateway,
            };
            range_sets.push(vec![parse_range(&single)?]);
        }
        if range_sets.is_empty() {
            return Err(invalid("no IP ranges specified".into()));
        }
        Ok(Ipam {
            network,
            range_sets,
            routes: ipam.routes,
            data_dir: ipam.data_dir.filter(|d| !d.is_empty()).unwrap_or_else(|| DEFAULT_DATA_DIR.into()).into(),
            resolv_conf: ipam.resolv_conf.filter(|d| !d.is_empty()).map(PathBuf::from),
        })
    }

    /// DNS from `resolvConf` (nameserver, domain, search and options lines).
    pub fn dns(&self) -> CniResult<Dns> {
        let Some(path) = &self.resolv_conf else { return Ok(Dns::default()) };
        let text = std::fs::read_to_string(path)
            .map_err(|e| CniError::io(format!("cannot read resolvConf {}", path.display()), e))?;
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn conf(ipam: Value) -> Value {
        json!({ "cniVersion": "1.0.0", "name": "net", "type": "host-local", "ipam": ipam })
    }

    fn refusal(ipam: Value) -> String {
        let e = Ipam::from_conf(&conf(ipam)).unwrap_err();
        assert_eq!(e.code, INVALID_CONFIG, "{e}");
        e.msg
    }

    #[test]
    fn a_key_of_the_wrong_type_is_refused_by_name() {
        assert_eq!(refusal(json!({ "ranges": [[{ "subnet": 5 }]] })), "invalid network config: \"ipam.ranges[0][0].subnet\": invalid type: integer `5`, expected IPv4 or IPv6 network address");
        assert!(refusal(json!({ "ranges": [[{ "subnet": "10.0.0.0/24", "rangeStart": "10.0.0.x" }]] }))
            .starts_with("invalid network config: \"ipam.ranges[0][0].rangeStart\": "));
        assert!(refusal(json!({ "ranges": [{ "subnet": "10.0.0.0/24" }] }))
            .starts_with("invalid network config: \"ipam.ranges[0]\": invalid type: map, expected a sequence"));
        assert!(refusal(json!({ "subnet": "10.0.0.0/24", "dataDir": 1 }))
            .starts_with("invalid network config: \"ipam.dataDir\": invalid type: integer"));
        assert!(refusal(json!({ "subnet": "10.0.0.0/24", "routes": [{ "dst": "0.0.0.0/0", "gw": true }] }))
            .starts_with("invalid network config: \"ipam.routes[0].gw\": invalid type: boolean"));
        // The older single range: a subnet that is not a string is refused, not skipped.
        assert!(refusal(json!({ "subnet": 10 })).starts_with("invalid network config: \"ipam.subnet\": "));
    }

    #[test]
    fn unknown_keys_are_ignored_and_the_keys_read() {
        let ipam = Ipam::from_conf(&conf(json!({
            "type": "host-local", "someday": true,
            "ranges": [[{ "subnet": "10.1.0.0/24", "rangeStart": "10.1.0.10", "rangeEnd": "10.1.0.20", "gateway": "10.1.0.254", "note": "x" }], [{ "subnet": "fd00::/64" }]],
            "routes": [{ "dst": "0.0.0.0/0", "mtu": 1400 }], "dataDir": "/tmp/d", "resolvConf": null
        })))
        .unwrap();
        assert_eq!(
            ipam.range_sets[0],
            [Range {
                subnet: "10.1.0.0/24".parse().unwrap(),
                start: "10.1.0.10".parse().unwrap(),
                end: "10.1.0.20".parse().unwrap(),
                gateway: Some("10.1.0.254".parse().unwrap())
            }]
        );
        assert_eq!(
            (ipam.range_sets[1][0].start, ipam.range_sets[1][0].gateway),
            ("fd00::1".parse().unwrap(), Some("fd00::1".parse().unwrap()))
        );
        assert_eq!(ipam.routes, [Route { dst: "0.0.0.0/0".parse().unwrap(), gw: None }]);
        assert_eq!((ipam.network.as_str(), ipam.data_dir.to_str(), ipam.resolv_conf), ("net", Some("/tmp/d"), None));
        let older = Ipam::from_conf(&conf(json!({ "subnet": "10.2.0.0/16", "rangeStart": "10.2.1.1" }))).unwrap();
        assert_eq!(
            (older.range_sets[0][0].start, older.data_dir.to_str()),
            ("10.2.1.1".parse().unwrap(), Some(DEFAULT_DATA_DIR))
        );
    }
}
