//! `run`: create and start a container; in the foreground, forward signals, wait for its
//! init and exit with its code (128+signal when killed), then delete it.

use anyhow::{Context, Result};

use crate::cli::RunArgs;
use crate::logging::Reporter;
use crate::store::Store;
use crate::terminal::{ConsoleReceiver, Proxy};

/// Returns the exit code berth should exit with.
pub fn run(store: &Store, args: &RunArgs, reporter: &Reporter) -> Result<i32> {
    let id = &args.create.id;
    let bundle = crate::bundle::prepare(store, &args.create)?;
    // A foreground terminal without a console socket is proxied by berth itself.
    let receiver = match (&args.create.console_socket, !args.detach && bundle.wants_terminal()) {
        (None, true) => Some(ConsoleReceiver::listen(&store.root, id)?),
        _ => None,
    };
    let console_socket = match &receiver {
        Some(receiver) => Some(receiver.socket().to_path_buf()),
        None => args.create.console_socket.as_ref().map(crate::bundle::absolute),
    };
    let mut container = match crate::lifecycle::create(store, &args.create, &bundle, args.detach, console_socket) {
        Ok(container) => container,
        Err(e) => {
            if let Some(receiver) = receiver {
                receiver.abandon();
            }
            return Err(e);
        }
    };
    if args.detach {
        crate::lifecycle::start(&mut container, reporter)?;
        return Ok(0);
    }
    let init = container.pid().with_context(|| format!("container {id} has no init process after create"))?;
    // Signals are blocked since berth started (`foreground::block_all`): what arrived
    // meanwhile is forwarded.
    let proxy = match receiver {
        Some(receiver) => Some(Proxy::start(receiver.receive()?)?),
        None => None,
    };
    crate::lifecycle::start(&mut container, reporter)?;
    let code = crate::foreground::wait_forwarding(init, || {
        if let Some(proxy) = &proxy {
            proxy.resize();
        }
    });
    if let Some(proxy) = proxy {
        proxy.finish();
    }
    if !args.keep || code.is_err() {
        if code.is_ok() {
            // Reaped: nothing is left to kill, and its pid may be reused already.
            container.set_status(libcontainer::container::ContainerStatus::Stopped);
        }
        if let Err(e) = crate::lifecycle::destroy(&mut container, true, reporter) {
            reporter.warn(&format!("cannot delete container {id} after it exited: {e:#}"));
        }
    }
    code
}
