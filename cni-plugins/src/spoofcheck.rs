//! MAC spoof checking for a bridge port (`macspoofchk`), laid out as the reference bridge
//! lays it out: in table `bridge nat`, base chain `PREROUTING` (filter, priority -300)
//! jumps on the host veth to `cni-br-iface-<id>`, which jumps to `cni-br-iface-<id>-mac`:
//! frames from the container's own MAC return, every other frame is dropped. `<id>` is the
//! container id and interface, and every rule is commented `macspoofchk-<id>`.

use crate::error::{CniError, CniResult, IO_FAILURE};
use crate::netlink::nftables::{with_shared, BaseChain, Batch, Expr, Family, Verdict, LINK_HEADER, META_IIFNAME};
use crate::netlink::NetlinkError;

const TABLE: &str = "nat";
const PREROUTING: &str = "PREROUTING";
const HOOK_PREROUTING: u32 = 0;
const PRIORITY: i32 = -300;
/// IFNAMSIZ: interface names are compared as 16 zero-padded bytes.
const IFNAMSIZ: usize = 16;

fn failed(e: NetlinkError) -> CniError {
    CniError::new(IO_FAILURE, format!("macspoofchk: {e}"))
}

fn reference(container_id: &str, ifname: &str) -> String {
    format!("{container_id}-{ifname}")
}

fn chains(reference: &str) -> (String, String) {
    let iface = format!("cni-br-iface-{reference}");
    let mac = format!("{iface}-mac");
    (iface, mac)
}

/// Lets only frames from `mac` in through the bridge port `host_veth`.
pub fn setup(container_id: &str, ifname: &str, host_veth: &str, mac: [u8; 6]) -> CniResult<()> {
    let id = reference(container_id, ifname);
    let (iface_chain, mac_chain) = chains(&id);
    let comment = format!("macspoofchk-{id}");
    let mut name = host_veth.as_bytes().to_vec();
    name.resize(IFNAMSIZ, 0);
    with_shared(|nft| {
        let mut batch = Batch::new();
        // Declaring the existing table and base chain again would make the process wait
        // out an RCU grace period as it leaves nf_tables; a base chain removed meanwhile
        // fails the transaction, which is then an error to retry.
        if !nft.has_chain(Family::Bridge, TABLE, PREROUTING)? {
            batch.add_table(Family::Bridge, TABLE);
            batch.add_chain(
                Family::Bridge,
                TABLE,
                PREROUTING,
                Some(&BaseChain { kind: "filter", hook: HOOK_PREROUTING, priority: PRIORITY }),
            );
        }
        batch.add_chain(Family::Bridge, TABLE, &iface_chain, None);
        batch.add_chain(Family::Bridge, TABLE, &mac_chain, None);
        batch.flush_chain(Family::Bridge, TABLE, &iface_chain);
        batch.flush_chain(Family::Bridge, TABLE, &mac_chain);
        let rules = [
            (
                PREROUTING,
                vec![Expr::Meta(META_IIFNAME), Expr::Equal(name), Expr::Verdict(Verdict::Jump(iface_chain.clone()))],
            ),
            (iface_chain.as_str(), vec![Expr::Verdict(Verdict::Jump(mac_chain.clone()))]),
            (
                mac_chain.as_str(),
                vec![
                    Expr::Payload { base: LINK_HEADER, offset: 6, len: 6 },
                    Expr::Equal(mac.to_vec()),
                    Expr::Verdict(Verdict::Return),
                ],
            ),
            (mac_chain.as_str(), vec![Expr::Verdict(Verdict::Drop)]),
        ];
        for (chain, exprs) in &rules {
            batch.add_rule(Family::Bridge, TABLE, chain, exprs, Some(&comment));
        }
        nft.commit(batch)
    })
    .map_err(failed)
}

/// Removes the attachment's jump and chains; nothing to remove is not an error.
pub fn teardown(container_id: &str, ifname: &str) -> CniResult<()> {
    let id = reference(container_id, ifname);
    let (iface_chain, mac_chain) = chains(&id);
    let comment = format!("macspoofchk-{id}");
    with_shared(|nft| {
        let mut batch = Batch::new();
        for rule in nft.rules(Family::Bridge, TABLE, PREROUTING)? {
            if rule.comment.as_deref() == Some(comment.as_str()) {
                batch.delete_rule(Family::Bridge, TABLE, PREROUTING, rule.handle);
            }
        }
        // The jump goes first, then the chain that jumps, then the chain jumped to.
        for chain in [&iface_chain, &mac_chain] {
            if nft.has_chain(Family::Bridge, TABLE, chain)? {
                batch.delete_chain(Family::Bridge, TABLE, chain);
            }
        }
        nft.commit(batch)
    })
    .map_err(failed)
}
