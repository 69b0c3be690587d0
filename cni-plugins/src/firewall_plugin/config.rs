//! The firewall plugin's config: the reference plugin's keys, typed, and the backend they
//! choose.

use serde::Deserialize;
use serde_json::Value;

use crate::conf::NetConf;
use crate::error::{CniError, CniResult, INVALID_CONFIG};

/// The keys as the config gives them.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct FirewallKeys {
    #[serde(flatten)]
    net: NetConf,
    backend: String,
    iptables_admin_chain_name: String,
    firewalld_zone: String,
    ingress_policy: String,
}

/// Which firewall holds the container's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// The filter table's `CNI-FORWARD` chain (and the admin chain it jumps to first).
    Iptables { admin_chain: String },
    /// firewalld's zone, to which the container's addresses are added as sources.
    Firewalld { zone: String },
}

/// Who may open connections to the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngressPolicy {
    /// Anyone the rest of the firewall lets through.
    Open,
    /// Only interfaces of the container's own bridge (`CNI-ISOLATION-STAGE-1/2`).
    SameBridge,
}

pub struct FirewallConf {
    pub net: NetConf,
    pub backend: Backend,
    pub ingress_policy: IngressPolicy,
}

impl FirewallConf {
    /// Reads the config; `firewalld_running` is asked only when the backend is left to
    /// choose (`""` or absent, as podman writes it) or is firewalld. A config naming
    /// firewalld is refused while it is not running, except for `removing` (DEL), which
    /// then has nothing of firewalld's to undo.
    pub fn parse(json: &Value, firewalld_running: impl Fn() -> bool, removing: bool) -> CniResult<FirewallConf> {
        let keys: FirewallKeys = crate::conf::parse(json)?;
        let ingress_policy = match keys.ingress_policy.as_str() {
            "" | "open" => IngressPolicy::Open,
            "same-bridge" => IngressPolicy::SameBridge,
            other => {
                return Err(CniError::new(
                    INVALID_CONFIG,
                    format!("unknown ingressPolicy {other:?}: use \"open\" or \"same-bridge\""),
                ))
            }
        };
        let iptables = || Backend::Iptables {
            admin_chain: match keys.iptables_admin_chain_name.as_str() {
                "" => "CNI-ADMIN".to_string(),
                name => name.to_string(),
            },
        };
        let firewalld = || Backend::Firewalld {
            zone: match keys.firewalld_zone.as_str() {
                "" => "trusted".to_string(),
                zone => zone.to_string(),
            },
        };
        let backend = match keys.backend.as_str() {
            "iptables" => iptables(),
            "firewalld" if removing || firewalld_running() => firewalld(),
            "firewalld" => {
                return Err(CniError::new(
                    INVALID_CONFIG,
                    "backend \"firewalld\": firewalld is not running; start firewalld, or use backend \"iptables\" (or leave backend empty to choose)",
                ))
            }
            "" if firewalld_running() => firewalld(),
            "" => iptables(),
            other => {
                return Err(CniError::new(
                    INVALID_CONFIG,
                    format!("unknown firewall backend {other:?}: use \"iptables\" or \"firewalld\" (or leave it empty to choose)"),
                ))
            }
        };
        if let Backend::Iptables { admin_chain } = &backend {
            // The name goes into iptables-restore input: one word, as iptables allows it.
            if admin_chain.len() > 28 || admin_chain.chars().any(|c| c.is_whitespace() || c == '"') {
                return Err(CniError::new(
                    INVALID_CONFIG,
                    format!("iptablesAdminChainName {admin_chain:?} is not a valid chain name (at most 28 characters, no spaces or quotes)"),
                ));
            }
        }
        Ok(FirewallConf { net: keys.net, backend, ingress_policy })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn conf(keys: Value) -> Value {
        let mut conf = json!({ "cniVersion": "1.0.0", "name": "net", "type": "firewall" });
        conf.as_object_mut().unwrap().extend(keys.as_object().unwrap().clone());
        conf
    }

    fn refusal(keys: Value) -> String {
        let e = FirewallConf::parse(&conf(keys), || false, false).err().expect("refused");
        assert_eq!(e.code, INVALID_CONFIG, "{e}");
        e.msg
    }

    #[test]
    fn a_key_of_the_wrong_type_is_refused_by_name() {
        assert!(refusal(json!({ "backend": 1 })).starts_with("invalid network config: \"backend\": invalid type"));
        assert!(refusal(json!({ "iptablesAdminChainName": ["A"] }))
            .starts_with("invalid network config: \"iptablesAdminChainName\": invalid type: sequence"));
        assert!(refusal(json!({ "ingressPolicy": true }))
            .starts_with("invalid network config: \"ingressPolicy\": invalid type: boolean"));
        assert!(refusal(json!({ "firewalldZone": 3 })).starts_with("invalid network config: \"firewalldZone\""));
    }

    #[test]
    fn defaults_choices_and_refusals() {
        let c =
            FirewallConf::parse(&conf(json!({ "backend": "", "someday": 1, "ingressPolicy": null })), || false, false)
                .unwrap();
        assert_eq!(c.backend, Backend::Iptables { admin_chain: "CNI-ADMIN".into() });
        assert_eq!(c.ingress_policy, IngressPolicy::Open);
        let chosen = FirewallConf::parse(&conf(json!({})), || true, false).unwrap();
        assert_eq!(chosen.backend, Backend::Firewalld { zone: "trusted".into() });
        let own = FirewallConf::parse(
            &conf(json!({ "backend": "iptables", "iptablesAdminChainName": "MINE", "ingressPolicy": "same-bridge" })),
            || true,
            false,
        )
        .unwrap();
        assert_eq!(
            (own.backend, own.ingress_policy),
            (Backend::Iptables { admin_chain: "MINE".into() }, IngressPolicy::SameBridge)
        );
        assert!(refusal(json!({ "backend": "firewalld" })).contains("firewalld is not running"));
        let removal = FirewallConf::parse(&conf(json!({ "backend": "firewalld" })), || false, true).unwrap();
        assert_eq!(removal.backend, Backend::Firewalld { zone: "trusted".into() });
        assert!(refusal(json!({ "backend": "pf" })).contains("unknown firewall backend \"pf\""));
        assert!(refusal(json!({ "ingressPolicy": "closed" })).contains("unknown ingressPolicy \"closed\""));
        assert!(refusal(json!({ "iptablesAdminChainName": "A B" })).contains("not a valid chain name"));
    }
}
