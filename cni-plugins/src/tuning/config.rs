//! The tuning plugin's config: the reference plugin's keys typed (`sysctl`, `mac`, `mtu`,
//! `promisc`, `allmulti`, `dataDir`, and `txQLen` of later versions), with the MAC also
//! from `CNI_ARGS` `MAC=` and `runtimeConfig.mac`, and every key also from `args.cni`,
//! which wins, in the reference's order.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::conf::NetConf;
use crate::error::{CniError, CniResult, INVALID_CONFIG};
use crate::netlink::route::LinkSettings;

/// Where the links' original settings are kept for DEL, as the reference keeps them.
pub const DEFAULT_DATA_DIR: &str = "/run/cni/tuning";

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct TuningKeys {
    #[serde(flatten)]
    net: NetConf,
    data_dir: String,
    sysctl: BTreeMap<String, String>,
    mac: String,
    promisc: bool,
    mtu: u32,
    allmulti: Option<bool>,
    #[serde(rename = "txQLen")]
    txqlen: Option<u32>,
    runtime_config: RuntimeConfig,
    args: Option<ArgsKey>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RuntimeConfig {
    mac: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ArgsKey {
    cni: Option<OverrideKeys>,
}

/// `args.cni`: each key present overrides the config's.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct OverrideKeys {
    sysctl: Option<BTreeMap<String, String>>,
    mac: Option<String>,
    promisc: Option<bool>,
    mtu: Option<u32>,
    allmulti: Option<bool>,
    #[serde(rename = "txQLen")]
    txqlen: Option<u32>,
}

pub struct TuningConf {
    pub net: NetConf,
    pub data_dir: String,
    /// Sysctl keys (dotted, `IFNAME` not yet replaced) and values, in key order.
    pub sysctl: BTreeMap<String, String>,
    /// The link settings to apply; promiscuous mode only turned on (`promisc: false`
    /// leaves it), as the reference has it.
    pub link: LinkSettings,
}

/// A MAC written `aa:bb:cc:dd:ee:ff` (or with `-`).
pub fn parse_mac(text: &str) -> CniResult<[u8; 6]> {
    let parts: Vec<&str> = text.split([':', '-']).collect();
    let bytes: Vec<u8> =
        parts.iter().filter_map(|p| (p.len() == 2).then(|| u8::from_str_radix(p, 16).ok()).flatten()).collect();
    <[u8; 6]>::try_from(bytes.as_slice()).ok().filter(|_| parts.len() == 6).ok_or_else(|| {
        CniError::new(INVALID_CONFIG, format!("invalid MAC address {text:?}: write it as aa:bb:cc:dd:ee:ff"))
    })
}

impl TuningConf {
    /// `cni_args` is `CNI_ARGS` as pairs (its `MAC` sets the MAC).
    pub fn parse(json: &Value, cni_args: &[(String, String)]) -> CniResult<TuningConf> {
        let keys: TuningKeys = crate::conf::parse(json)?;
        let mut sysctl = keys.sysctl;
        let mut mac = keys.mac;
        let (mut promisc, mut mtu, mut allmulti, mut txqlen) = (keys.promisc, keys.mtu, keys.allmulti, keys.txqlen);
        if let Some((_, value)) = cni_args.iter().find(|(k, v)| k == "MAC" && !v.is_empty()) {
            mac = value.clone();
        }
        if !keys.runtime_config.mac.is_empty() {
            mac = keys.runtime_config.mac;
        }
        if let Some(over) = keys.args.and_then(|a| a.cni) {
            sysctl.extend(over.sysctl.unwrap_or_default());
            mac = over.mac.unwrap_or(mac);
            promisc = over.promisc.unwrap_or(promisc);
            mtu = over.mtu.unwrap_or(mtu);
            allmulti = over.allmulti.or(allmulti);
            txqlen = over.txqlen.or(txqlen);
        }
        for key in sysctl.keys() {
            sysctl_path(key, "IFNAME")?;
        }
        let link = LinkSettings {
            mac: if mac.is_empty() { None } else { Some(parse_mac(&mac)?) },
            mtu: (mtu != 0).then_some(mtu),
            txqlen,
            promiscuous: promisc.then_some(true),
            allmulti,
        };
        let data_dir = if keys.data_dir.is_empty() { DEFAULT_DATA_DIR.to_string() } else { keys.data_dir };
        Ok(TuningConf { net: keys.net, data_dir, sysctl, link })
    }
}

/// The /proc/sys file of a sysctl key (`net.ipv4.conf.IFNAME.forwarding`, or written with
/// `/`), with `IFNAME` replaced by `ifname`; only keys of the network namespace (`net.`)
/// are allowed: the others would change the host.
pub fn sysctl_path(key: &str, ifname: &str) -> CniResult<String> {
    let key = key.replacen("IFNAME", ifname, 1);
    // With `/` as separator a component may hold dots (an interface `eth0.100`).
    let parts: Vec<&str> = if key.contains('/') { key.split('/').collect() } else { key.split('.').collect() };
    if parts.first() != Some(&"net") || parts.len() < 2 || parts.iter().any(|p| p.is_empty() || *p == "..") {
        return Err(CniError::new(
            INVALID_CONFIG,
            format!("invalid sysctl key {key:?}: only keys of the container's network namespace (net.*) may be set"),
        ));
    }
    Ok(format!("/proc/sys/{}", parts.join("/")))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn conf(keys: Value) -> Value {
        let mut conf = json!({ "cniVersion": "1.0.0", "name": "net", "type": "tuning" });
        conf.as_object_mut().unwrap().extend(keys.as_object().unwrap().clone());
        conf
    }

    fn refusal(keys: Value) -> String {
        let e = TuningConf::parse(&conf(keys), &[]).err().expect("refused");
        assert_eq!(e.code, INVALID_CONFIG, "{e}");
        e.msg
    }

    #[test]
    fn a_key_of_the_wrong_type_is_refused_by_name() {
        assert!(refusal(json!({ "mtu": "1400" })).starts_with("invalid network config: \"mtu\": invalid type: string"));
        assert!(
            refusal(json!({ "mtu": -1 })).starts_with("invalid network config: \"mtu\": invalid value: integer `-1`")
        );
        assert!(refusal(json!({ "promisc": "yes" })).starts_with("invalid network config: \"promisc\""));
        assert!(refusal(json!({ "sysctl": { "net.ipv4.ip_forward": 1 } }))
            .starts_with("invalid network config: \"sysctl.net.ipv4.ip_forward\": invalid type: integer"));
        assert!(refusal(json!({ "txQLen": "long" })).starts_with("invalid network config: \"txQLen\""));
        assert!(
            refusal(json!({ "args": { "cni": { "mac": 5 } } })).starts_with("invalid network config: \"args.cni.mac\"")
        );
    }

    #[test]
    fn sysctls_outside_the_network_namespace_and_bad_macs_are_refused() {
        assert!(refusal(json!({ "sysctl": { "kernel.hostname": "x" } }))
            .contains("only keys of the container's network namespace"));
        assert!(refusal(json!({ "sysctl": { "net/../kernel/hostname": "x" } })).contains("invalid sysctl key"));
        assert!(refusal(json!({ "sysctl": { "net": "x" } })).contains("invalid sysctl key"));
        assert!(refusal(json!({ "mac": "aa:bb:cc" })).contains("invalid MAC address \"aa:bb:cc\""));
        assert_eq!(
            sysctl_path("net.ipv4.conf.IFNAME.arp_notify", "eth0").unwrap(),
            "/proc/sys/net/ipv4/conf/eth0/arp_notify"
        );
        assert_eq!(
            sysctl_path("net/ipv4/conf/eth0.100/arp_notify", "eth0").unwrap(),
            "/proc/sys/net/ipv4/conf/eth0.100/arp_notify"
        );
    }

    #[test]
    fn overrides_come_in_the_references_order_and_unknown_keys_are_ignored() {
        let c = TuningConf::parse(
            &conf(json!({ "mac": "02:00:00:00:00:01", "mtu": 1400, "someday": 1, "allmulti": null, "runtimeConfig": { "mac": "02:00:00:00:00:03" },
                          "args": { "cni": { "mtu": 1300, "sysctl": { "net.ipv4.conf.IFNAME.arp_notify": "1" } } } })),
            &[("MAC".into(), "02:00:00:00:00:02".into())],
        )
        .unwrap();
        assert_eq!(
            c.link,
            LinkSettings {
                mac: Some([2, 0, 0, 0, 0, 3]),
                mtu: Some(1300),
                txqlen: None,
                promiscuous: None,
                allmulti: None
            }
        );
        assert_eq!(c.sysctl.len(), 1);
        assert_eq!(c.data_dir, DEFAULT_DATA_DIR);
        let from_args = TuningConf::parse(&conf(json!({})), &[("MAC".into(), "02:00:00:00:00:02".into())]).unwrap();
        assert_eq!(from_args.link.mac, Some([2, 0, 0, 0, 0, 2]));
    }
}
