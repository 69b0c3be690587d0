//! portmap's config: the reference plugin's keys (`runtimeConfig.portMappings`, `snat`,
//! `markMasqBit`, `externalSetMarkChain`, `conditionsV4`/`conditionsV6`) and the later
//! `masqAll` and `backend`, typed and checked once per call; and the container's addresses,
//! read from the prevResult as the reference reads them.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;

use crate::conf::NetConf;
use crate::error::{CniError, CniResult, INVALID_CONFIG};
use crate::result::NetResult;

/// The mark bit the reference uses when none is configured (Kubernetes uses 14 and 15).
pub const DEFAULT_MARK_BIT: u32 = 13;

/// portmap's own keys. The common ones are read apart, not flattened in: serde gives a
/// flattened struct its keys through a copy of the whole config, every port mapping and
/// the prevResult included (a third of an ADD of 1000 ports).
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct PortMapKeys {
    snat: Option<bool>,
    #[serde(rename = "conditionsV4")]
    conditions_v4: Option<Vec<String>>,
    #[serde(rename = "conditionsV6")]
    conditions_v6: Option<Vec<String>>,
    mark_masq_bit: Option<i64>,
    external_set_mark_chain: Option<String>,
    masq_all: bool,
    backend: Option<String>,
    runtime_config: RuntimeConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct RuntimeConfig {
    port_mappings: Vec<MappingKeys>,
}

/// One `portMappings` entry as the runtime writes it. containerd's CRI plugin (through
/// go-cni, whose struct has no JSON tags) writes the keys capitalised (`HostPort`), which the
/// reference plugin accepts because Go matches keys case-insensitively.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct MappingKeys {
    #[serde(alias = "HostPort")]
    host_port: i64,
    #[serde(alias = "ContainerPort")]
    container_port: i64,
    #[serde(alias = "Protocol")]
    protocol: String,
    #[serde(rename = "hostIP", alias = "HostIP")]
    host_ip: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Sctp,
    Tcp,
    Udp,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    pub fn from_number(number: u8) -> Option<Protocol> {
        [Protocol::Tcp, Protocol::Udp, Protocol::Sctp].into_iter().find(|p| p.number() == number)
    }

    pub fn from_name(name: &str) -> Option<Protocol> {
        [Protocol::Tcp, Protocol::Udp, Protocol::Sctp].into_iter().find(|p| p.name() == name)
    }
}

/// One published port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub protocol: Protocol,
    /// The address it is published on; None for every address of the host. An
    /// unspecified `hostIP` (0.0.0.0, ::) still restricts the mapping to its family.
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
    /// The `hostIP` as given, 0.0.0.0 and :: included.
    pub host_ip_given: Option<IpAddr>,
}

impl Mapping {
    /// Whether the mapping applies to a container address of this family (the reference
    /// skips a mapping whose `hostIP` is of the other family).
    pub fn applies_to(&self, container: IpAddr) -> bool {
        self.host_ip_given.is_none_or(|ip| ip.is_ipv4() == container.is_ipv4())
    }
}

/// Which firewall the mappings are written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Nftables,
    Iptables,
}

/// Who sets the masquerade mark in the iptables backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkChain {
    /// berth's own CNI-HOSTPORT-SETMARK with this bit, masqueraded by CNI-HOSTPORT-MASQ.
    Bit(u32),
    /// A chain someone else keeps (Kubernetes' KUBE-MARK-MASQ, say).
    External(String),
}

pub struct PortMapConf {
    pub net: NetConf,
    pub snat: bool,
    pub masq_all: bool,
    pub mark: MarkChain,
    pub conditions_v4: Vec<String>,
    pub conditions_v6: Vec<String>,
    pub backend: BackendKind,
    pub mappings: Vec<Mapping>,
}

fn invalid(msg: String) -> CniError {
    CniError::new(INVALID_CONFIG, msg)
}

fn port(value: i64, what: &str, index: usize) -> CniResult<u16> {
    u16::try_from(value).ok().filter(|p| *p > 0).ok_or_else(|| {
        invalid(format!("runtimeConfig.portMappings[{index}].{what}: {value} is not a port number (1-65535)"))
    })
}

impl PortMapConf {
    pub fn parse(json: &Value) -> CniResult<PortMapConf> {
        let net: NetConf = crate::conf::parse(json)?;
        let keys: PortMapKeys = crate::conf::parse(json)?;
        let mark = match (keys.mark_masq_bit, keys.external_set_mark_chain) {
            (Some(_), Some(_)) => {
                return Err(invalid("give markMasqBit or externalSetMarkChain, not both".to_string()));
            }
            (_, Some(chain)) => MarkChain::External(chain),
            (bit, None) => {
                let bit = bit.unwrap_or(i64::from(DEFAULT_MARK_BIT));
                MarkChain::Bit(
                    u32::try_from(bit)
                        .ok()
                        .filter(|b| *b <= 31)
                        .ok_or_else(|| invalid(format!("markMasqBit {bit} is not between 0 and 31")))?,
                )
            }
        };
        let backend = match keys.backend.as_deref() {
            None | Some("") | Some("nftables") => BackendKind::Nftables,
            Some("iptables") => BackendKind::Iptables,
            Some(other) => {
                return Err(invalid(format!("unknown backend {other:?}: use \"nftables\" or \"iptables\"")));
            }
        };
        let mut mappings = Vec::new();
        for (index, entry) in keys.runtime_config.port_mappings.iter().enumerate() {
            // Docker's and podman's default; the reference passes an empty one to iptables,
            // which refuses it.
            let name = if entry.protocol.is_empty() { "tcp".to_string() } else { entry.protocol.to_lowercase() };
            let protocol = Protocol::from_name(&name).ok_or_else(|| {
                invalid(format!(
                    "runtimeConfig.portMappings[{index}].protocol {:?} is not tcp, udp or sctp",
                    entry.protocol
                ))
            })?;
            let host_ip_given = match entry.host_ip.as_str() {
                "" => None,
                text => Some(text.parse::<IpAddr>().map_err(|_| {
                    invalid(format!("runtimeConfig.portMappings[{index}].hostIP {text:?} is not an IP address"))
                })?),
            };
            mappings.push(Mapping {
                protocol,
                host_ip: host_ip_given.filter(|ip| !ip.is_unspecified()),
                host_port: port(entry.host_port, "hostPort", index)?,
                container_port: port(entry.container_port, "containerPort", index)?,
                host_ip_given,
            });
        }
        Ok(PortMapConf {
            net,
            snat: keys.snat.unwrap_or(true),
            masq_all: keys.masq_all,
            mark,
            conditions_v4: keys.conditions_v4.unwrap_or_default(),
            conditions_v6: keys.conditions_v6.unwrap_or_default(),
            backend,
            mappings,
        })
    }

    pub fn network(&self) -> &str {
        &self.net.name
    }
}

/// The container's addresses in the prevResult: the first IPv4 and the first IPv6 one,
/// skipping those of interfaces that are not `ifname` inside the sandbox, as the reference
/// picks them.
pub fn container_addresses(result: &NetResult, ifname: &str) -> Vec<IpNet> {
    let (mut v4, mut v6) = (None, None);
    for ip in &result.ips {
        let slot = if ip.address.addr().is_ipv4() { &mut v4 } else { &mut v6 };
        if slot.is_some() {
            continue;
        }
        if let Some(interface) = ip.interface.and_then(|i| result.interfaces.get(i)) {
            if interface.name != ifname || interface.sandbox.as_deref().unwrap_or("").is_empty() {
                continue;
            }
        }
        *slot = Some(ip.address);
    }
    v4.into_iter().chain(v6).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn conf(keys: Value) -> Value {
        let mut conf = json!({ "cniVersion": "1.0.0", "name": "net", "type": "portmap" });
        conf.as_object_mut().unwrap().extend(keys.as_object().unwrap().clone());
        conf
    }

    fn refusal(keys: Value) -> String {
        let e = PortMapConf::parse(&conf(keys)).err().expect("refused");
        assert_eq!(e.code, INVALID_CONFIG, "{e}");
        e.msg
    }

    #[test]
    fn a_key_of_the_wrong_type_is_refused_by_name() {
        assert_eq!(
            refusal(json!({ "snat": "yes" })),
            "invalid network config: \"snat\": invalid type: string \"yes\", expected a boolean"
        );
        assert!(refusal(json!({ "markMasqBit": "13" })).starts_with("invalid network config: \"markMasqBit\": "));
        assert!(
            refusal(json!({ "conditionsV4": "-s 1.2.3.4" })).starts_with("invalid network config: \"conditionsV4\": ")
        );
        assert!(refusal(json!({ "runtimeConfig": { "portMappings": [{ "hostPort": "80" }] } }))
            .starts_with("invalid network config: \"runtimeConfig.portMappings[0].hostPort\": invalid type: string"));
        assert!(refusal(json!({ "masqAll": 1 })).starts_with("invalid network config: \"masqAll\": "));
    }

    #[test]
    fn defaults_and_checks_follow_the_reference() {
        let c = PortMapConf::parse(&conf(json!({ "someday": 1, "runtimeConfig": { "portMappings": [{ "hostPort": 8080, "containerPort": 80, "protocol": "UDP", "hostIP": "0.0.0.0" }] } }))).unwrap();
        assert_eq!(
            (c.snat, c.masq_all, c.backend, c.mark.clone()),
            (true, false, BackendKind::Nftables, MarkChain::Bit(13))
        );
        assert_eq!(c.mappings[0].protocol, Protocol::Udp);
        assert_eq!(c.mappings[0].host_ip, None);
        assert!(!c.mappings[0].applies_to("fd00::2".parse().unwrap()));
        assert!(refusal(json!({ "markMasqBit": 13, "externalSetMarkChain": "KUBE-MARK-MASQ" })).contains("not both"));
        assert!(refusal(json!({ "markMasqBit": 32 })).contains("between 0 and 31"));
        assert!(refusal(json!({ "backend": "pf" })).contains("unknown backend"));
        assert!(refusal(json!({ "runtimeConfig": { "portMappings": [{ "hostPort": 0, "containerPort": 80 }] } }))
            .contains("hostPort: 0 is not a port number"));
        assert!(refusal(
            json!({ "runtimeConfig": { "portMappings": [{ "hostPort": 1, "containerPort": 80, "protocol": "icmp" }] } })
        )
        .contains("is not tcp, udp or sctp"));
    }

    #[test]
    fn containerds_capitalised_mapping_keys_are_read() {
        let c = PortMapConf::parse(&conf(json!({ "runtimeConfig": { "portMappings": [{ "HostPort": 8080, "ContainerPort": 80, "Protocol": "tcp", "HostIP": "" }] } }))).unwrap();
        assert_eq!(
            (c.mappings[0].host_port, c.mappings[0].container_port, c.mappings[0].protocol),
            (8080, 80, Protocol::Tcp)
        );
    }
}
