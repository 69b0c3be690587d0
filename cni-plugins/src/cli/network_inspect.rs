//! `network inspect NAME`: the network and its attached containers as JSON.

use anyhow::Result;
use serde_json::json;

use crate::network::{self, state, Dirs};

pub fn run(dirs: &Dirs, name: &str) -> Result<()> {
    let _lock = state::lock(dirs)?;
    let (network, _) = network::load(dirs, name)?;
    let containers: Vec<_> = state::members(dirs, name)?
        .into_iter()
        .map(|m| {
            json!({ "id": m.id, "name": m.name, "aliases": m.aliases, "ifname": m.ifname,
                    "ips": m.result["ips"], "portMappings": m.port_mappings })
        })
        .collect();
    let mut shown = serde_json::to_value(&network)?;
    shown["containers"] = json!(containers);
    println!("{}", serde_json::to_string_pretty(&shown)?);
    Ok(())
}
