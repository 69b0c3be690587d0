//! `network create NAME`: writes the network's conflist.

use anyhow::Result;
use clap::Args;

use crate::network::{self, state, CreateOptions, Dirs};

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The network's name (letters, digits, '_', '.', '-')
    pub name: String,
    /// A subnet in CIDR form (repeat for one IPv4 and one IPv6); a free private one if absent
    #[arg(long = "subnet", value_name = "CIDR")]
    pub subnets: Vec<String>,
    /// The gateway (the bridge's address) in a given --subnet; its first address if absent
    #[arg(long, value_name = "IP")]
    pub gateway: Option<String>,
    /// Add a free IPv6 subnet too
    #[arg(long)]
    pub ipv6: bool,
    /// No masquerading, no default route, no published ports
    #[arg(long)]
    pub internal: bool,
}

pub fn run(dirs: &Dirs, args: &CreateArgs) -> Result<()> {
    let options = CreateOptions {
        subnets: args.subnets.clone(),
        gateway: args.gateway.clone(),
        ipv6: args.ipv6,
        internal: args.internal,
    };
    let _lock = state::lock(dirs)?;
    let created = network::create(dirs, &args.name, &options)?;
    println!("{}", created.name);
    Ok(())
}
