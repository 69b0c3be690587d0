//! `delete`: removes a stopped or created container (any container with --force).

use anyhow::{bail, Result};
use libcontainer::container::ContainerStatus;

use crate::cli::DeleteArgs;
use crate::logging::Reporter;
use crate::store::Store;

pub fn delete(store: &Store, args: &DeleteArgs, reporter: &Reporter) -> Result<()> {
    if args.force && !store.exists(&args.id) {
        crate::store::check_id(&args.id)?;
        return Ok(());
    }
    let (mut container, _) = store.load(&args.id)?;
    let status = container.status();
    if !args.force && matches!(status, ContainerStatus::Running | ContainerStatus::Paused) {
        bail!(
            "cannot delete container {} that is not stopped: {} (stop it, or use --force)",
            args.id,
            crate::state::status_name(status)
        );
    }
    crate::lifecycle::destroy(&mut container, args.force, reporter)
}
