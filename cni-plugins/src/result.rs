//! CNI results and their JSON in each result version: 0.3.x and 0.4.0 name each IP's
//! family (`"version": "4"`), 1.0.0 and 1.1.0 do not; `prevResult` is read back from any.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{json, Map, Value};

use crate::error::{CniError, CniResult, DECODING_FAILURE};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    pub sandbox: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
    /// Index into the result's interfaces.
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dns {
    pub nameservers: Vec<String>,
    pub domain: String,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

impl NetResult {
    /// The result as the given result version spells it.
    pub fn to_json(&self, version: &str) -> Value {
        let legacy = version.starts_with("0.");
        let mut out = Map::new();
        out.insert("cniVersion".into(), version.into());
        if !self.interfaces.is_empty() {
            let interfaces: Vec<Value> = self
                .interfaces
                .iter()
                .map(|i| {
                    let mut v = json!({ "name": i.name, "mac": i.mac });
                    if let Some(sandbox) = &i.sandbox {
                        v["sandbox"] = sandbox.clone().into();
                    }
                    v
                })
                .collect();
            out.insert("interfaces".into(), interfaces.into());
        }
        if !self.ips.is_empty() {
            let ips: Vec<Value> = self
                .ips
                .iter()
                .map(|ip| {
                    let mut v = Map::new();
                    if legacy {
                        v.insert("version".into(), (if ip.address.addr().is_ipv4() { "4" } else { "6" }).into());
                    }
                    if let Some(index) = ip.interface {
                        v.insert("interface".into(), index.into());
                    }
                    v.insert("address".into(), ip.address.to_string().into());
                    if let Some(gw) = ip.gateway {
                        v.insert("gateway".into(), gw.to_string().into());
                    }
                    Value::Object(v)
                })
                .collect();
            out.insert("ips".into(), ips.into());
        }
        if !self.routes.is_empty() {
            let routes: Vec<Value> = self
                .routes
                .iter()
                .map(|r| {
                    let mut v = json!({ "dst": r.dst.to_string() });
                    if let Some(gw) = r.gw {
                        v["gw"] = gw.to_string().into();
                    }
                    v
                })
                .collect();
            out.insert("routes".into(), routes.into());
        }
        let mut dns = Map::new();
        if !self.dns.nameservers.is_empty() {
            dns.insert("nameservers".into(), self.dns.nameservers.clone().into());
        }
        if !self.dns.domain.is_empty() {
            dns.insert("domain".into(), self.dns.domain.clone().into());
        }
        if !self.dns.search.is_empty() {
            dns.insert("search".into(), self.dns.search.clone().into());
        }
        if !self.dns.options.is_empty() {
            dns.insert("options".into(), self.dns.options.clone().into());
        }
        out.insert("dns".into(), Value::Object(dns));
        Value::Object(out)
    }

    /// Reads a result (a `prevResult` or a delegate's answer) of any supported version.
    pub fn from_json(value: &Value) -> CniResult<NetResult> {
        let bad = |what: &str| CniError::new(DECODING_FAILURE, format!("the result's {what} is malformed"));
        let strings = |v: &Value| -> Vec<String> { v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default() };
        let mut result = NetResult::default();
        for i in value["interfaces"].as_array().into_iter().flatten() {
            result.interfaces.push(Interface {
                name: i["name"].as_str().unwrap_or_default().into(),
                mac: i["mac"].as_str().unwrap_or_default().into(),
                sandbox: i["sandbox"].as_str().map(String::from),
            });
        }
        for ip in value["ips"].as_array().into_iter().flatten() {
            result.ips.push(IpConfig {
                address: ip["address"].as_str().and_then(|a| a.parse().ok()).ok_or_else(|| bad("ips[].address"))?,
                gateway: match ip["gateway"].as_str() {
                    Some(g) => Some(g.parse().map_err(|_| bad("ips[].gateway"))?),
                    None => None,
                },
                interface: ip["interface"].as_u64().map(|i| i as usize),
            });
        }
        for r in value["routes"].as_array().into_iter().flatten() {
            result.routes.push(Route {
                dst: r["dst"].as_str().and_then(|d| d.parse().ok()).ok_or_else(|| bad("routes[].dst"))?,
                gw: match r["gw"].as_str() {
                    Some(g) => Some(g.parse().map_err(|_| bad("routes[].gw"))?),
                    None => None,
                },
            });
        }
        let dns = &value["dns"];
        result.dns = Dns { nameservers: strings(&dns["nameservers"]), domain: dns["domain"].as_str().unwrap_or_default().into(), search: strings(&dns["search"]), options: strings(&dns["options"]) };
        Ok(result)
    }
}
