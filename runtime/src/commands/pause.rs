//! `pause` and `resume`: freeze and thaw every process of a container.

use anyhow::{bail, Context, Result};
use libcontainer::container::ContainerStatus;

use crate::store::Store;

pub fn pause(store: &Store, id: &str) -> Result<()> {
    let (mut container, _) = store.load(id)?;
    if container.status() != ContainerStatus::Running {
        bail!("container not running: {id} is {}", crate::state::status_name(container.status()));
    }
    container.pause().with_context(|| format!("cannot pause container {id}"))
}

pub fn resume(store: &Store, id: &str) -> Result<()> {
    let (mut container, _) = store.load(id)?;
    if container.status() != ContainerStatus::Paused {
        bail!("container not paused: {id} is {}", crate::state::status_name(container.status()));
    }
    container.resume().with_context(|| format!("cannot resume container {id}"))
}
