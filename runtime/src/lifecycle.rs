//! Starting and removing containers with runtime-spec's hook rules: poststart hooks run
//! once the user's process has been executed (after the startContainer hooks) and a failing
//! one destroys the container; poststop hooks run after the container is gone and a
//! failing one only warns.

use anyhow::{Context, Result};
use libcontainer::container::Container;
use libcontainer::hooks::run_hooks;

use crate::logging::Reporter;

/// Deletes a container (killing it first when `force`), then runs its poststop hooks one
/// by one; a failing poststop hook is reported as a warning and the rest still run.
pub fn destroy(container: &mut Container, force: bool, reporter: &Reporter) -> Result<()> {
    let id = container.id().to_string();
    let poststop = take_hooks(container, Kind::Poststop)?;
    container.delete(force).with_context(|| format!("cannot delete container {id}"))?;
    for hook in poststop {
        let path = hook.path().display().to_string();
        if let Err(e) = run_hooks(Some(&vec![hook]), Some(&container.state), None, None, None) {
            reporter.warn(&format!("poststop hook {path} of container {id} failed: {e}"));
        }
    }
    Ok(())
}

/// The hooks berth runs itself rather than leave to libcontainer.
#[derive(Clone, Copy)]
enum Kind {
    Poststart,
    Poststop,
}

/// Removes hooks of `kind` from the container's saved config and returns them: libcontainer
/// would run poststart hooks before the user's process is executed, and would stop a delete
/// at a failing poststop hook.
fn take_hooks(container: &Container, kind: Kind) -> Result<Vec<oci_spec::runtime::Hook>> {
    let Ok(mut config) = container.spec() else { return Ok(Vec::new()) };
    let Some(hooks) = config.hooks.as_mut() else { return Ok(Vec::new()) };
    let taken = match kind {
        Kind::Poststart => hooks.poststart_mut().take(),
        Kind::Poststop => hooks.poststop_mut().take(),
    };
    let Some(taken) = taken else { return Ok(Vec::new()) };
    config
        .save(&container.root)
        .with_context(|| format!("cannot update the saved config of container {}", container.id()))?;
    Ok(taken)
}

/// Waits until the container's first process has been executed: its executable is no
/// longer berth's own (the process berth forked runs the startContainer hooks, then
/// executes the user's program), or it is gone.
fn await_exec(container: &Container) {
    use std::os::unix::fs::MetadataExt;
    let Some(pid) = container.pid() else { return };
    let Ok(own) = std::fs::metadata("/proc/self/exe") else { return };
    let exe = format!("/proc/{pid}/exe");
    // A process that runs berth itself would never look executed: bounded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        match std::fs::metadata(&exe) {
            Ok(meta) if (meta.dev(), meta.ino()) == (own.dev(), own.ino()) => std::thread::sleep(std::time::Duration::from_millis(1)),
            _ => return,
        }
    }
}

/// Starts a created container; when a poststart hook (or anything after the process began)
/// fails, the container is killed and removed so nothing is left, as runc does.
pub fn start(container: &mut Container, reporter: &Reporter) -> Result<()> {
    let id = container.id().to_string();
    let poststart = take_hooks(container, Kind::Poststart)?;
    let started = container.start().map_err(|e| anyhow::Error::new(e).context(format!("cannot start container {id}"))).and_then(|()| {
        if poststart.is_empty() {
            return Ok(());
        }
        await_exec(container);
        run_hooks(Some(&poststart), Some(&container.state), Some(&container.root), None, None).map_err(|e| anyhow::Error::new(e).context(format!("cannot start container {id}: a poststart hook failed")))
    });
    if let Err(error) = started {
        if let Err(cleanup) = destroy(container, true, reporter) {
            reporter.warn(&format!("cannot remove container {id} after its start failed: {cleanup:#}"));
        }
        return Err(error);
    }
    Ok(())
}
