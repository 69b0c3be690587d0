//! `stop` (berth's own command; runc has none): the container's stop signal, then SIGKILL
//! once the grace period is over, waiting for the init to exit, as `docker stop` does.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use libcontainer::container::{Container, ContainerStatus};

use crate::cli::StopArgs;
use crate::signal::parse_signal_number;
use crate::store::Store;

/// The annotation holding the signal to stop with (image-spec's name; `berth-image unpack`
/// writes the image's StopSignal or `--stop-signal` there).
pub const STOP_SIGNAL_ANNOTATION: &str = "org.opencontainers.image.stopSignal";
/// The annotation holding the grace period in seconds (`berth-image unpack --stop-timeout`).
pub const STOP_TIMEOUT_ANNOTATION: &str = "berth.stop-timeout";
/// The grace period when neither `-t` nor the annotation gives one (Docker's).
const DEFAULT_GRACE_SECONDS: i64 = 10;

pub fn stop(store: &Store, args: &StopArgs) -> Result<()> {
    let (container, _) = store.load(&args.id)?;
    if container.status() == ContainerStatus::Stopped {
        return Ok(());
    }
    let Some(pid) = container.pid() else {
        return Ok(());
    };
    let annotations = bundle_annotations(&container)?;
    let signal = match annotations.get(STOP_SIGNAL_ANNOTATION) {
        Some(name) => parse_signal_number(name).with_context(|| {
            format!("container {}: bad {STOP_SIGNAL_ANNOTATION} annotation {name:?} in its config.json", args.id)
        })?,
        None => libc::SIGTERM,
    };
    let grace = match (args.time, annotations.get(STOP_TIMEOUT_ANNOTATION)) {
        (Some(seconds), _) => seconds,
        (None, Some(text)) => text.trim().parse().with_context(|| {
            format!("container {}: bad {STOP_TIMEOUT_ANNOTATION} annotation {text:?} (whole seconds expected)", args.id)
        })?,
        (None, None) => DEFAULT_GRACE_SECONDS,
    };
    // A created container runs nothing yet: its init waits for start and, as PID 1 without
    // a handler, ignores the stop signal. Waiting a grace period for it would be waiting for nothing.
    let grace = if container.status() == ContainerStatus::Created { 0 } else { grace };
    // A pidfd names this very process: signals cannot reach a later owner of the pid.
    let init = match Pidfd::open(pid.as_raw()) {
        Ok(init) => init,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot open the init process {pid} of {}", args.id)),
    };
    // The pid may have been reused between the load and the open: load again and check.
    if store.load(&args.id)?.0.status() == ContainerStatus::Stopped {
        return Ok(());
    }
    init.signal(signal).with_context(|| format!("cannot send signal {signal} to container {}", args.id))?;
    if container.status() == ContainerStatus::Paused {
        // A frozen process cannot act on the signal; thaw it, as docker stop does.
        let (mut paused, _) = store.load(&args.id)?;
        paused.resume().with_context(|| format!("cannot resume paused container {} to stop it", args.id))?;
    }
    let deadline = u64::try_from(grace).ok().map(|s| Instant::now() + Duration::from_secs(s));
    if init.wait_exit(deadline)? {
        return Ok(());
    }
    init.signal(libc::SIGKILL).with_context(|| format!("cannot send SIGKILL to container {}", args.id))?;
    init.wait_exit(None)?;
    Ok(())
}

/// The annotations of the container's config.json (in its bundle); none when it has none.
fn bundle_annotations(container: &Container) -> Result<std::collections::HashMap<String, String>> {
    let config = container.bundle().join("config.json");
    let spec = oci_spec::runtime::Spec::load(&config).with_context(|| {
        format!(
            "cannot read {} for the container's stop signal; `berth kill ID SIGNAL` signals it without one",
            config.display()
        )
    })?;
    Ok(spec.annotations().clone().unwrap_or_default())
}

/// A process descriptor: signals go to that process only, and it polls readable at its exit.
struct Pidfd(OwnedFd);

impl Pidfd {
    fn open(pid: i32) -> std::io::Result<Pidfd> {
        // SAFETY: pidfd_open with a pid and no flags returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the descriptor is new and owned by nothing else.
        Ok(Pidfd(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    fn signal(&self, signal: i32) -> Result<()> {
        // SAFETY: a pidfd, a signal number, no siginfo, no flags.
        let rc = unsafe {
            libc::syscall(libc::SYS_pidfd_send_signal, self.0.as_raw_fd(), signal, std::ptr::null::<u8>(), 0)
        };
        match rc {
            0 => Ok(()),
            // Exited already: the wait that follows sees it.
            _ if std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) => Ok(()),
            _ => Err(std::io::Error::last_os_error().into()),
        }
    }

    /// Waits until the process exits (true) or `deadline` passes (false); None waits forever.
    fn wait_exit(&self, deadline: Option<Instant>) -> Result<bool> {
        loop {
            let timeout_ms = match deadline {
                None => -1,
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    left.as_millis().min(i32::MAX as u128) as i32
                }
            };
            let mut poll = libc::pollfd { fd: self.0.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&mut poll, 1, timeout_ms) };
            match ready {
                1.. => return Ok(true),
                0 => return Ok(false),
                _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => continue,
                _ => bail!("cannot wait for the container's init: {}", std::io::Error::last_os_error()),
            }
        }
    }
}
