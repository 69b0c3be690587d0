//! `start`: runs the user process of a created container.

use anyhow::{bail, Result};
use libcontainer::container::ContainerStatus;

use crate::logging::Reporter;
use crate::store::Store;

pub fn start(store: &Store, id: &str, reporter: &Reporter) -> Result<()> {
    let (mut container, _) = store.load(id)?;
    match container.status() {
        ContainerStatus::Created => {}
        ContainerStatus::Stopped => bail!("cannot start a container that has stopped: {id}"),
        ContainerStatus::Running => bail!("cannot start an already running container: {id}"),
        other => bail!("cannot start container {id} in {} state", crate::state::status_name(other)),
    }
    crate::lifecycle::start(&mut container, reporter)
}
