//! The bridge's config: the reference plugin's keys, typed, and what they imply (the
//! gateway flags, the port's VLANs, the masquerading backend), checked once per call.

use serde::Deserialize;
use serde_json::Value;

use crate::conf::NetConf;
use crate::error::{CniError, CniResult, INVALID_CONFIG};
use crate::firewall::{self, Firewall};
use crate::ipam::{Delegation, IpamType};

/// The keys as the config gives them; absent ones are off, 0 or unset.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct BridgeKeys {
    #[serde(flatten)]
    net: NetConf,
    ipam: IpamType,
    bridge: Option<String>,
    is_gateway: bool,
    is_default_gateway: bool,
    force_address: bool,
    ip_masq: bool,
    ip_masq_backend: Option<String>,
    mtu: Option<u32>,
    hairpin_mode: bool,
    promisc_mode: bool,
    enabledad: bool,
    disable_container_interface: bool,
    port_isolation: bool,
    vlan: i64,
    vlan_trunk: Option<Vec<VlanTrunkEntry>>,
    preserve_default_vlan: bool,
    macspoofchk: bool,
}

/// One entry of `vlanTrunk`: `{"id": N}` or `{"minID": A, "maxID": B}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct VlanTrunkEntry {
    #[serde(rename = "minID")]
    min_id: Option<i64>,
    #[serde(rename = "maxID")]
    max_id: Option<i64>,
    id: Option<i64>,
}

/// The config as the plugin works with it.
pub struct BridgeConf {
    /// The common keys (the network's name, prevResult, ...).
    pub net: NetConf,
    pub ipam: IpamType,
    pub bridge: String,
    pub is_gateway: bool,
    pub is_default_gateway: bool,
    pub force_address: bool,
    pub ip_masq: bool,
    pub mtu: Option<u32>,
    pub hairpin: bool,
    pub promiscuous: bool,
    pub enable_dad: bool,
    pub disable_container_interface: bool,
    pub port_isolation: bool,
    /// The port's untagged VLAN (0: none).
    pub vlan: u16,
    /// Tagged VLANs the port carries too.
    pub vlan_trunk: Vec<u16>,
    pub preserve_default_vlan: bool,
    pub macspoofchk: bool,
    /// The masquerading backend `ipMasqBackend` names.
    pub firewall: Box<dyn Firewall>,
}

fn vlan_id(id: i64, what: &str) -> CniResult<u16> {
    match u16::try_from(id) {
        Ok(id) if (1..=4094).contains(&id) => Ok(id),
        _ => Err(CniError::new(INVALID_CONFIG, format!("invalid VLAN ID {id} in {what} (must be between 1 and 4094)"))),
    }
}

/// `vlanTrunk`'s VLANs, sorted, once each.
fn vlan_trunk(entries: Option<&[VlanTrunkEntry]>) -> CniResult<Vec<u16>> {
    let Some(entries) = entries else { return Ok(Vec::new()) };
    let mut vlans = Vec::new();
    for entry in entries {
        match (entry.min_id, entry.max_id) {
            (None, None) => {}
            (Some(low), Some(high)) => {
                let (low, high) = (vlan_id(low, "vlanTrunk minID")?, vlan_id(high, "vlanTrunk maxID")?);
                if low > high {
                    return Err(CniError::new(
                        INVALID_CONFIG,
                        format!("vlanTrunk range {low}-{high}: minID is above maxID"),
                    ));
                }
                vlans.extend(low..=high);
            }
            _ => return Err(CniError::new(INVALID_CONFIG, "a vlanTrunk range needs both minID and maxID")),
        }
        if let Some(id) = entry.id {
            vlans.push(vlan_id(id, "vlanTrunk id")?);
        }
    }
    if vlans.is_empty() {
        return Err(CniError::new(
            INVALID_CONFIG,
            "vlanTrunk names no VLAN: give {\"id\": N} or {\"minID\": A, \"maxID\": B}",
        ));
    }
    vlans.sort_unstable();
    vlans.dedup();
    Ok(vlans)
}

impl BridgeConf {
    pub fn parse(json: &Value) -> CniResult<BridgeConf> {
        let keys: BridgeKeys = crate::conf::parse(json)?;
        let vlan = match keys.vlan {
            0 => 0,
            id => vlan_id(id, "vlan")?,
        };
        let bridge = keys.bridge.unwrap_or_else(|| "cni0".to_string());
        if bridge.is_empty() || bridge.len() > 15 || bridge.contains('/') {
            return Err(CniError::new(INVALID_CONFIG, format!("bridge name {bridge:?} is not a valid interface name")));
        }
        Ok(BridgeConf {
            firewall: firewall::configured(keys.ip_masq_backend.as_deref())?,
            vlan_trunk: vlan_trunk(keys.vlan_trunk.as_deref())?,
            net: keys.net,
            ipam: keys.ipam,
            bridge,
            is_gateway: keys.is_gateway || keys.is_default_gateway,
            is_default_gateway: keys.is_default_gateway,
            force_address: keys.force_address,
            ip_masq: keys.ip_masq,
            mtu: keys.mtu.filter(|m| *m > 0),
            hairpin: keys.hairpin_mode,
            promiscuous: keys.promisc_mode,
            enable_dad: keys.enabledad,
            disable_container_interface: keys.disable_container_interface,
            port_isolation: keys.port_isolation,
            vlan,
            preserve_default_vlan: keys.preserve_default_vlan,
            macspoofchk: keys.macspoofchk,
        })
    }

    /// The network's name.
    pub fn network(&self) -> &str {
        &self.net.name
    }

    /// A call of the IPAM plugin with this config (`json`, the config this was read from).
    pub fn ipam<'a>(&'a self, json: &'a Value) -> Delegation<'a> {
        Delegation { ipam: &self.ipam, version: &self.net.cni_version, conf: json }
    }

    pub fn uses_vlans(&self) -> bool {
        self.vlan != 0 || !self.vlan_trunk.is_empty()
    }

    /// The VLANs of a port: its native one untagged, the trunk's tagged.
    pub fn port_vlans(&self) -> Vec<(u16, bool)> {
        let mut vlans: Vec<(u16, bool)> = self.vlan_trunk.iter().map(|v| (*v, false)).collect();
        match self.vlan {
            0 if !vlans.is_empty() => vlans.push((1, true)),
            0 => {}
            vlan => vlans.push((vlan, true)),
        }
        vlans
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn conf(keys: Value) -> Value {
        let mut conf = json!({ "cniVersion": "1.0.0", "name": "net", "type": "bridge", "ipam": { "type": "host-local", "subnet": "10.88.0.0/24" } });
        conf.as_object_mut().unwrap().extend(keys.as_object().unwrap().clone());
        conf
    }

    fn refusal(keys: Value) -> String {
        let e = BridgeConf::parse(&conf(keys)).err().expect("refused");
        assert_eq!(e.code, INVALID_CONFIG, "{e}");
        e.msg
    }

    #[test]
    fn a_key_of_the_wrong_type_is_refused_by_name() {
        assert_eq!(
            refusal(json!({ "mtu": "1500" })),
            "invalid network config: \"mtu\": invalid type: string \"1500\", expected u32"
        );
        assert_eq!(
            refusal(json!({ "ipMasq": "true" })),
            "invalid network config: \"ipMasq\": invalid type: string \"true\", expected a boolean"
        );
        assert_eq!(
            refusal(json!({ "isGateway": 1 })),
            "invalid network config: \"isGateway\": invalid type: integer `1`, expected a boolean"
        );
        assert!(refusal(json!({ "bridge": ["br0"] }))
            .starts_with("invalid network config: \"bridge\": invalid type: sequence"));
        assert!(refusal(json!({ "vlanTrunk": [{ "id": "7" }] }))
            .starts_with("invalid network config: \"vlanTrunk[0].id\": invalid type: string"));
        assert!(refusal(json!({ "ipam": { "type": 5 } }))
            .starts_with("invalid network config: \"ipam.type\": invalid type: integer"));
        assert!(
            refusal(json!({ "name": false })).starts_with("invalid network config: \"name\": invalid type: boolean")
        );
    }

    #[test]
    fn unknown_and_null_keys_are_ignored() {
        let c = BridgeConf::parse(&conf(json!({ "bridge": "br-t", "mtu": 1400, "isDefaultGateway": true, "hairpinMode": null, "someday": { "a": 1 }, "args": { "cni": { "ips": ["10.88.0.9"] } } }))).unwrap();
        assert_eq!(
            (c.bridge.as_str(), c.mtu, c.is_gateway, c.hairpin, c.network(), c.ipam.plugin.as_str()),
            ("br-t", Some(1400), true, false, "net", "host-local")
        );
        let defaults = BridgeConf::parse(&conf(json!({ "mtu": 0, "vlan": 0 }))).unwrap();
        assert_eq!(
            (defaults.bridge.as_str(), defaults.mtu, defaults.ip_masq, defaults.uses_vlans()),
            ("cni0", None, false, false)
        );
    }

    #[test]
    fn vlans_are_checked_and_listed_once() {
        let c = BridgeConf::parse(&conf(
            json!({ "vlan": 7, "vlanTrunk": [{ "minID": 10, "maxID": 12 }, { "id": 11 }, { "id": 3 }] }),
        ))
        .unwrap();
        assert_eq!(c.port_vlans(), [(3, false), (10, false), (11, false), (12, false), (7, true)]);
        assert!(refusal(json!({ "vlan": 5000 })).contains("invalid VLAN ID 5000 in vlan"));
        assert!(refusal(json!({ "vlanTrunk": [{ "minID": 20, "maxID": 10 }] })).contains("minID is above maxID"));
        assert!(refusal(json!({ "vlanTrunk": [{ "minID": 20 }] })).contains("needs both minID and maxID"));
        assert!(refusal(json!({ "vlanTrunk": [] })).contains("names no VLAN"));
        assert!(refusal(json!({ "ipMasqBackend": "pf" })).contains("unknown ipMasqBackend"));
    }
}
