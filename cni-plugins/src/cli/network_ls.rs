//! `network ls`: the networks as a table, or as JSON with `--format json`.

use anyhow::Result;
use clap::Args;

use super::Format;
use crate::network::{self, Dirs};

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

pub fn run(dirs: &Dirs, args: &LsArgs) -> Result<()> {
    let networks = network::list(dirs)?;
    if args.format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&networks)?);
        return Ok(());
    }
    println!("{:<20} {:<10} {:<40} INTERNAL", "NAME", "BRIDGE", "SUBNETS");
    for n in networks {
        let subnets: Vec<String> = n.subnets.iter().map(|s| s.subnet.to_string()).collect();
        println!("{:<20} {:<10} {:<40} {}", n.name, n.bridge, subnets.join(","), n.internal);
    }
    Ok(())
}
