//! Removing containers with runtime-spec's hook rules: poststop hooks run after the
//! container is gone and a failing one only warns; a failing poststart destroys the container.

use anyhow::{Context, Result};
use libcontainer::container::Container;
use libcontainer::hooks::run_hooks;

use crate::logging::Reporter;

/// Deletes a container (killing it first when `force`), then runs its poststop hooks one
/// by one; a failing poststop hook is reported as a warning and the rest still run.
pub fn destroy(container: &mut Container, force: bool, reporter: &Reporter) -> Result<()> {
    let id = container.id().to_string();
    let poststop = take_poststop_hooks(container)?;
    container.delete(force).with_context(|| format!("cannot delete container {id}"))?;
    for hook in poststop {
        let path = hook.path().display().to_string();
        if let Err(e) = run_hooks(Some(&vec![hook]), Some(&container.state), None, None, None) {
            reporter.warn(&format!("poststop hook {path} of container {id} failed: {e}"));
        }
    }
    Ok(())
}

/// Removes the poststop hooks from the container's saved config (so libcontainer's delete
/// does not stop at a failing one) and returns them.
fn take_poststop_hooks(container: &Container) -> Result<Vec<oci_spec::runtime::Hook>> {
    let Ok(mut config) = container.spec() else { return Ok(Vec::new()) };
    let Some(hooks) = config.hooks.as_mut() else { return Ok(Vec::new()) };
    let Some(poststop) = hooks.poststop().clone() else { return Ok(Vec::new()) };
    hooks.set_poststop(None);
    config
        .save(&container.root)
        .with_context(|| format!("cannot update the saved config of container {}", container.id()))?;
    Ok(poststop)
}

/// Starts a created container; when a poststart hook (or anything after the process began)
/// fails, the container is killed and removed so nothing is left, as runc does.
pub fn start(container: &mut Container, reporter: &Reporter) -> Result<()> {
    let id = container.id().to_string();
    if let Err(e) = container.start() {
        let error = anyhow::Error::new(e).context(format!("cannot start container {id}"));
        if let Err(cleanup) = destroy(container, true, reporter) {
            reporter.warn(&format!("cannot remove container {id} after its start failed: {cleanup:#}"));
        }
        return Err(error);
    }
    Ok(())
}
