//! `check NETWORK --netns PATH --id ID`: CHECK through the network's chain.

use anyhow::{bail, Result};

use super::DetachArgs;
use crate::network::{attach, Dirs};

pub fn run(dirs: &Dirs, args: &DetachArgs) -> Result<()> {
    if args.netns.is_empty() {
        bail!("check needs the container's --netns");
    }
    attach::check(dirs, &args.network, &args.id, &args.ifname, &args.netns)
}
