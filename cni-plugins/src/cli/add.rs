//! `add NETWORK --netns PATH --id ID`: ADD through the network's chain; prints the result.

use anyhow::Result;

use super::AttachArgs;
use crate::network::attach::{self, AddRequest};
use crate::network::Dirs;

pub fn run(dirs: &Dirs, args: &AttachArgs) -> Result<()> {
    let request = AddRequest {
        network: args.network.clone(),
        container_id: args.id.clone(),
        netns: args.netns.clone(),
        ifname: args.ifname.clone(),
        publish: args.publish.publish.clone(),
        aliases: args.publish.aliases.clone(),
        name: None,
        hosts_file: None,
    };
    let result = attach::add(dirs, &request)?;
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}
