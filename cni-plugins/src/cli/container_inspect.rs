//! `container inspect NAME`: the running container pinned under NAME (its id, bundle and
//! pinned network namespace) as JSON, which `--network container:NAME` bundles join.

use anyhow::{Context, Result};

use crate::network::{pin, Dirs};

pub fn run(dirs: &Dirs, name: &str) -> Result<()> {
    let pinned = pin::pinned(dirs, name)?.with_context(|| {
        format!(
            "no running container is named {name:?} in {}: it must run, attached to a network by `berth-cni hook add --name {name}`",
            dirs.state_dir.display()
        )
    })?;
    println!("{}", serde_json::to_string_pretty(&pinned)?);
    Ok(())
}
