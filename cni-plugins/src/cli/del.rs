//! `del NETWORK --id ID`: DEL through the network's chain with the cached result.

use anyhow::Result;

use super::DetachArgs;
use crate::network::{attach, Dirs};

pub fn run(dirs: &Dirs, args: &DetachArgs) -> Result<()> {
    attach::del(dirs, &args.network, &args.id, &args.ifname, &args.netns)
}
