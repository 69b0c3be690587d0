//! The bridge's masquerading (`ipMasq`) through the firewall backends: added with the
//! configured backend, removed from every backend (the ADD may have used either), and
//! collected from both by GC.

use ipnet::IpNet;

use super::config::BridgeConf;
use crate::error::CniResult;
use crate::firewall::{self, Attachment};
use crate::skel::Args;

fn attachment<'a>(c: &'a BridgeConf, args: &'a Args) -> Attachment<'a> {
    Attachment { network: c.network(), container_id: &args.container_id, ifname: &args.ifname }
}

/// Masquerades traffic from the attachment's `addresses`.
pub fn add(c: &BridgeConf, args: &Args, addresses: &[IpNet]) -> CniResult<()> {
    c.firewall.add_masquerade(&attachment(c, args), addresses)
}

/// Undoes `add` after a failed ADD.
pub fn undo(c: &BridgeConf, args: &Args, addresses: &[IpNet]) -> CniResult<()> {
    c.firewall.del_masquerade(&attachment(c, args), addresses)
}

/// Removes the attachment's rules from every backend; `known` are its addresses when a
/// prevResult gave them. Every backend is tried; the first failure is returned.
pub fn del(c: &BridgeConf, args: &Args, known: &[IpNet]) -> CniResult<()> {
    let mut outcome = Ok(());
    for backend in firewall::all() {
        outcome = outcome.and(backend.del_masquerade(&attachment(c, args), known));
    }
    outcome
}

/// Removes the rules of the network's attachments not in `valid`, from every backend.
pub fn gc(c: &BridgeConf, valid: &[(String, String)]) -> CniResult<()> {
    firewall::all().iter().try_for_each(|backend| backend.gc_masquerade(c.network(), valid))
}
