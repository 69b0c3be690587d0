//! The firewall behind one small trait: masquerading for a container's addresses, set up
//! and torn down in one transaction per operation, with chain and comment names exactly as
//! the reference plugins write them (so either can clean up after the other).

pub mod iptables;

use ipnet::IpNet;
use sha2::{Digest, Sha512};

use crate::error::CniResult;

pub trait Firewall {
    /// Masquerades traffic from `addresses` leaving their own networks.
    fn add_masquerade(&self, network: &str, container_id: &str, addresses: &[IpNet]) -> CniResult<()>;
    /// Removes the container's masquerade chain and the rules jumping to it. `known` are the
    /// addresses from a prevResult, if any (a direct removal); without them, or when they do
    /// not match what is installed, the rules are found by reading the table.
    fn del_masquerade(&self, network: &str, container_id: &str, known: &[IpNet]) -> CniResult<()>;
    /// Removes the chains of every container of `network` not in `valid`.
    fn gc_masquerade(&self, network: &str, valid: &[String]) -> CniResult<()>;
}

/// `CNI-` and the first 24 hex digits of sha512(network name + container id).
pub fn chain_name(network: &str, container_id: &str) -> String {
    let digest = hex::encode(Sha512::digest(format!("{network}{container_id}").as_bytes()));
    format!("CNI-{}", &digest[..24])
}

/// The comment on every rule of the container's chain.
pub fn comment(network: &str, container_id: &str) -> String {
    format!("name: \"{network}\" id: \"{container_id}\"")
}
