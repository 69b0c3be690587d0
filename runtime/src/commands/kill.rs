//! `kill`: sends a signal (default SIGTERM) to a container's init, or to all its processes.
//! Signal 0 only checks that they exist, as kill(2) does (runc takes it too).

use anyhow::{bail, Context, Result};
use libcgroups::common::CgroupManager;
use libcontainer::container::{Container, ContainerStatus};
use libcontainer::signal::Signal as LibSignal;

use crate::cli::KillArgs;
use crate::signal::parse_signal;
use crate::store::Store;

pub fn kill(store: &Store, args: &KillArgs) -> Result<()> {
    let probe = args.signal.trim() == "0";
    let signal = if probe { None } else { Some(parse_signal(&args.signal)?) };
    let (mut container, _) = store.load(&args.id)?;
    if container.status() == ContainerStatus::Stopped && !args.all {
        bail!("container not running: {}", args.id);
    }
    let Some(signal) = signal else { return probe_processes(&container, args) };
    let signal = LibSignal::try_from(signal as i32).with_context(|| format!("unknown signal {}", args.signal))?;
    container.kill(signal, args.all).with_context(|| format!("cannot send {} to container {}", args.signal, args.id))
}

/// Signal 0: succeeds when the init (with --all, every process of the container) exists.
/// libcontainer's kill cannot send it, and would record the container as stopped after it.
fn probe_processes(container: &Container, args: &KillArgs) -> Result<()> {
    let pids = if args.all {
        crate::cgroups::manager(container)?
            .get_all_pids()
            .with_context(|| format!("cannot list the processes of container {}", args.id))?
    } else {
        container.pid().into_iter().collect()
    };
    for pid in pids {
        match nix::sys::signal::kill(pid, None) {
            Ok(()) => {}
            // A process of the container may exit while they are listed.
            Err(nix::errno::Errno::ESRCH) if args.all => {}
            Err(e) => return Err(e).with_context(|| format!("cannot signal process {pid} of container {}", args.id)),
        }
    }
    Ok(())
}
