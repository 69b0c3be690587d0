//! `run`: create and start a container; in the foreground, forward signals, wait for its
//! init and exit with its code (128+signal when killed), then delete it.

use anyhow::{Context, Result};
use nix::sys::signal::SigSet;

use crate::cli::RunArgs;
use crate::logging::Reporter;
use crate::store::Store;

/// Returns the exit code berth should exit with.
pub fn run(store: &Store, args: &RunArgs, reporter: &Reporter) -> Result<i32> {
    let id = &args.create.id;
    let mut container = super::create::build(store, &args.create, args.detach)?;
    if args.detach {
        crate::lifecycle::start(&mut container, reporter)?;
        return Ok(0);
    }
    let init = container.pid().with_context(|| format!("container {id} has no init process after create"))?;
    // Block every signal before start so none is lost: they are forwarded to the container.
    let signals = SigSet::all();
    signals.thread_block().context("cannot block signals to forward them")?;
    crate::lifecycle::start(&mut container, reporter)?;
    let code = crate::foreground::wait_forwarding(init, &signals);
    if !args.keep || code.is_err() {
        if let Err(e) = crate::lifecycle::destroy(&mut container, true, reporter) {
            reporter.warn(&format!("cannot delete container {id} after it exited: {e:#}"));
        }
    }
    code
}
