//! CNI results and their JSON in each result version: 0.3.x and 0.4.0 name each IP's
//! family (`"version": "4"`), 1.0.0 and 1.1.0 do not; `prevResult` is read back from any.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{CniError, CniResult, DECODING_FAILURE};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into the result's interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct NetResult {
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: Dns,
}

/// A result as one result version spells it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Spelled<'a> {
    cni_version: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    interfaces: &'a [Interface],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ips: Vec<SpelledIp<'a>>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    routes: &'a [Route],
    dns: &'a Dns,
}

#[derive(Serialize)]
struct SpelledIp<'a> {
    /// The family, "4" or "6", which only the 0.x versions spell out.
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'static str>,
    #[serde(flatten)]
    ip: &'a IpConfig,
}

impl NetResult {
    /// The result as the given result version spells it.
    pub fn to_json(&self, version: &str) -> Value {
        let legacy = version.starts_with("0.");
        let family = |ip: &IpConfig| if ip.address.addr().is_ipv4() { "4" } else { "6" };
        let ips = self.ips.iter().map(|ip| SpelledIp { version: legacy.then(|| family(ip)), ip }).collect();
        let spelled =
            Spelled { cni_version: version, interfaces: &self.interfaces, ips, routes: &self.routes, dns: &self.dns };
        serde_json::to_value(spelled).expect("a result's JSON has string keys only")
    }

    /// Reads a result (a `prevResult` or a delegate's answer) of any supported version.
    pub fn from_json(value: &Value) -> CniResult<NetResult> {
        serde_path_to_error::deserialize(value).map_err(|e| {
            CniError::new(DECODING_FAILURE, format!("the result's {} is malformed: {}", e.path(), e.inner()))
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sample() -> NetResult {
        NetResult {
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: "02:00:00:00:00:01".into(),
                sandbox: Some("/run/netns/c".into()),
            }],
            ips: vec![
                IpConfig {
                    address: "10.0.0.2/24".parse().unwrap(),
                    gateway: Some("10.0.0.1".parse().unwrap()),
                    interface: Some(0),
                },
                IpConfig { address: "fd00::2/64".parse().unwrap(), gateway: None, interface: None },
            ],
            routes: vec![Route { dst: "0.0.0.0/0".parse().unwrap(), gw: None }],
            dns: Dns { nameservers: vec!["10.0.0.1".into()], ..Default::default() },
        }
    }

    #[test]
    fn each_version_spells_the_result_as_the_spec_does() {
        let ips =
            json!([{ "interface": 0, "address": "10.0.0.2/24", "gateway": "10.0.0.1" }, { "address": "fd00::2/64" }]);
        let rest = json!({ "interfaces": [{ "name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": "/run/netns/c" }], "routes": [{ "dst": "0.0.0.0/0" }], "dns": { "nameservers": ["10.0.0.1"] } });
        let mut current = rest.clone();
        current["cniVersion"] = "1.0.0".into();
        current["ips"] = ips.clone();
        assert_eq!(sample().to_json("1.0.0"), current);
        let mut legacy = rest;
        legacy["cniVersion"] = "0.4.0".into();
        legacy["ips"] = ips;
        legacy["ips"][0]["version"] = "4".into();
        legacy["ips"][1]["version"] = "6".into();
        assert_eq!(sample().to_json("0.4.0"), legacy);
        assert_eq!(NetResult::default().to_json("1.1.0"), json!({ "cniVersion": "1.1.0", "dns": {} }));
    }

    #[test]
    fn a_result_of_any_version_reads_back() {
        for version in ["0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
            assert_eq!(NetResult::from_json(&sample().to_json(version)).unwrap(), sample(), "{version}");
        }
        let e = NetResult::from_json(&json!({ "ips": [{ "address": "10.0.0.300/24" }] })).unwrap_err();
        assert_eq!(e.code, DECODING_FAILURE);
        assert!(e.msg.starts_with("the result's ips[0].address is malformed"), "{}", e.msg);
    }
}
