//! The firewall behind one small trait: masquerading for a container's addresses, set up
//! and torn down in one transaction per operation, named exactly as the reference plugins
//! name them in either of their backends (so either can clean up after the other).

pub mod iptables;
pub mod nftables;

use ipnet::IpNet;
use sha2::{Digest, Sha512};

use crate::error::{CniError, CniResult, INVALID_CONFIG};

/// Whose rules: one interface of one container on one network.
#[derive(Clone, Copy)]
pub struct Attachment<'a> {
    pub network: &'a str,
    pub container_id: &'a str,
    pub ifname: &'a str,
}

pub trait Firewall: Send + Sync {
    /// Masquerades traffic from `addresses` leaving their own networks.
    fn add_masquerade(&self, attachment: &Attachment, addresses: &[IpNet]) -> CniResult<()>;
    /// Removes the attachment's masquerade rules. `known` are the addresses from a
    /// prevResult, if any; without them the rules are found by reading the tables.
    fn del_masquerade(&self, attachment: &Attachment, known: &[IpNet]) -> CniResult<()>;
    /// Removes the rules of every attachment of `network` not in `valid` (container id,
    /// interface).
    fn gc_masquerade(&self, network: &str, valid: &[(String, String)]) -> CniResult<()>;
}

/// The backend named by the `ipMasqBackend` key. Without the key berth uses nftables (a
/// table of its own, written over netlink in one transaction, which is what keeps ADD near
/// the kernel's floor); "iptables" gives the reference plugins' default rules.
pub fn configured(ip_masq_backend: Option<&str>) -> CniResult<Box<dyn Firewall>> {
    match ip_masq_backend {
        None | Some("nftables") => Ok(Box::new(nftables::Nftables)),
        Some("iptables") => Ok(Box::new(iptables::Iptables)),
        Some(other) => Err(CniError::new(
            INVALID_CONFIG,
            format!("unknown ipMasqBackend {other:?}: use \"nftables\" or \"iptables\""),
        )),
    }
}

/// Every backend, for removal: a container may have been added with another backend, by
/// another version or by the reference plugin.
pub fn all() -> [Box<dyn Firewall>; 2] {
    [Box::new(nftables::Nftables), Box::new(iptables::Iptables)]
}

/// The first `length` hex digits of sha512(text), the reference plugins' hash for names.
pub fn hash(text: &str, length: usize) -> String {
    let digest = hex::encode(Sha512::digest(text.as_bytes()));
    digest[..length].to_string()
}
