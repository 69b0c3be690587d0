//! `network rm NAME`: removes the network's conflist unless containers are attached.

use anyhow::Result;

use crate::network::{self, state, Dirs};

pub fn run(dirs: &Dirs, name: &str) -> Result<()> {
    let _lock = state::lock(dirs)?;
    network::remove(dirs, name)?;
    println!("{name}");
    Ok(())
}
