//! `kill`: sends a signal (default SIGTERM) to a container's init, or to all its processes.

use anyhow::{bail, Context, Result};
use libcontainer::container::ContainerStatus;
use libcontainer::signal::Signal as LibSignal;

use crate::cli::KillArgs;
use crate::signal::parse_signal;
use crate::store::Store;

pub fn kill(store: &Store, args: &KillArgs) -> Result<()> {
    let signal = parse_signal(&args.signal)?;
    let (mut container, _) = store.load(&args.id)?;
    if container.status() == ContainerStatus::Stopped && !args.all {
        bail!("container not running: {}", args.id);
    }
    let signal = LibSignal::try_from(signal as i32).with_context(|| format!("unknown signal {}", args.signal))?;
    container.kill(signal, args.all).with_context(|| format!("cannot send {} to container {}", args.signal, args.id))
}
