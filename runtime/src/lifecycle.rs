//! Creating, starting and removing containers. Create builds a container from a checked
//! bundle and leaves nothing behind when it fails. Start and delete follow runtime-spec's
//! hook rules: poststart hooks run once the user's process has been executed (after the
//! startContainer hooks) and a failing one destroys the container; poststop hooks run
//! after the container is gone and a failing one only warns.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use libcontainer::config::YoukiConfig;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::hooks::run_hooks;
use libcontainer::syscall::syscall::SyscallType;
use nix::unistd::Pid;

use crate::bundle::CheckedBundle;
use crate::cgroups;
use crate::cli::CreateArgs;
use crate::executor::BerthExecutor;
use crate::logging::Reporter;
use crate::mount_options::{self, SpecCopy};
use crate::store::Store;
use crate::{mount_namespace, propagation, working_dir};

/// Deletes a container (killing it first when `force`), then runs its poststop hooks one
/// by one; a failing poststop hook is reported as a warning and the rest still run.
pub fn destroy(container: &mut Container, force: bool, reporter: &Reporter) -> Result<()> {
    let id = container.id().to_string();
    let init_gone = stop_init(container, force);
    let config = container.spec().ok();
    let poststop = match &config {
        Some(config) if init_gone && remove_stopped(container, config)? => {
            config.hooks.as_ref().and_then(|hooks| hooks.poststop().clone()).unwrap_or_default()
        }
        _ => {
            let poststop = take_hooks(container, Kind::Poststop)?;
            container.delete(force).with_context(|| format!("cannot delete container {id}"))?;
            poststop
        }
    };
    for hook in poststop {
        let path = hook.path().display().to_string();
        if let Err(e) = run_hooks(Some(&vec![hook]), Some(&container.state), None, None, None) {
            reporter.warn(&format!("poststop hook {path} of container {id} failed: {e}"));
        }
    }
    Ok(())
}

/// Removes a container whose init is gone as libcontainer's delete would (its cgroups,
/// then its state directory), where berth can do that without libcontainer's cgroup
/// manager: cgroupfs on a cgroup v1 host, no Intel RDT state. Returns false, having done
/// nothing, where libcontainer must.
fn remove_stopped(container: &Container, config: &YoukiConfig) -> Result<bool> {
    let id = container.id();
    let intel_rdt = container.intel_rdt_dir().is_some()
        || container.intel_rdt_monitoring_dir().is_some()
        || container.clean_up_intel_rdt_subdirectory() == Some(true);
    if intel_rdt
        || !cgroups::remove_v1(&config.cgroup_path, container.systemd())
            .with_context(|| format!("cannot delete container {id}"))?
    {
        return Ok(false);
    }
    match fs::remove_dir_all(&container.root) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).with_context(|| {
            format!("cannot delete container {id}: cannot remove its state directory {}", container.root.display())
        }),
        _ => Ok(true),
    }
}

/// Makes sure the container's init is gone before its cgroups are removed: kills the init
/// of a created container (or, with `force`, a running one) and waits until it has exited
/// (at most 5 s). libcontainer kills it too, but then gives the cgroups only about 100 ms to
/// empty before failing the delete, too little on a loaded machine. Returns whether the
/// init is gone.
fn stop_init(container: &Container, force: bool) -> bool {
    use libcontainer::container::ContainerStatus;
    let killable = match container.status() {
        ContainerStatus::Stopped => return true,
        ContainerStatus::Created => true,
        ContainerStatus::Running => force,
        _ => false,
    };
    match container.pid() {
        Some(pid) if killable => kill_and_wait(pid, std::time::Duration::from_secs(5)),
        _ => false,
    }
}

/// SIGKILLs process `pid` and waits up to `limit` for it to exit. A pidfd names the process
/// even if its pid is reused meanwhile, and becomes readable the moment it exits (having
/// left its cgroups), so no polling. Returns whether it is gone.
fn kill_and_wait(pid: Pid, limit: std::time::Duration) -> bool {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let gone = || nix::errno::Errno::last() == nix::errno::Errno::ESRCH;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return gone();
    }
    // SAFETY: a new descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: pidfd_send_signal with no siginfo (the kernel fills it in as for kill).
    let sent = unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), libc::SIGKILL, std::ptr::null::<u8>(), 0)
    };
    if sent < 0 {
        return gone();
    }
    let deadline = std::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let mut wait = libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one pollfd that outlives the call.
        let ready = unsafe { libc::poll(&mut wait, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if ready >= 0 || nix::errno::Errno::last() != nix::errno::Errno::EINTR {
            return ready > 0;
        }
    }
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

/// The (device, inode) of the executable process `pid` runs, if it still runs.
fn executable_of(pid: Pid) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/exe")).ok().map(|meta| (meta.dev(), meta.ino()))
}

/// Waits until the container's first process has been executed: its executable is no
/// longer `setup`, the one it ran while created (berth's binary, or the sealed copy the
/// creating berth ran from: the process berth forked runs the startContainer hooks, then
/// executes the user's program), or it is gone.
fn await_exec(pid: Pid, setup: (u64, u64)) {
    // A process that runs berth itself would never look executed: bounded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline && executable_of(pid) == Some(setup) {
        std::thread::sleep(std::time::Duration::from_millis(1))
    }
}

/// Starts a created container; when a poststart hook (or anything after the process began)
/// fails, the container is killed and removed so nothing is left, as runc does.
pub fn start(container: &mut Container, reporter: &Reporter) -> Result<()> {
    let id = container.id().to_string();
    let poststart = take_hooks(container, Kind::Poststart)?;
    // Read while the process still waits for start, so still runs its setup executable
    // (only needed to know when to run poststart hooks).
    let setup = container.pid().filter(|_| !poststart.is_empty()).and_then(|pid| Some((pid, executable_of(pid)?)));
    let started = container
        .start()
        .map_err(|e| anyhow::Error::new(e).context(format!("cannot start container {id}")))
        .and_then(|()| {
            if poststart.is_empty() {
                return Ok(());
            }
            if let Some((pid, executable)) = setup {
                await_exec(pid, executable);
            }
            run_hooks(Some(&poststart), Some(&container.state), Some(&container.root), None, None).map_err(|e| {
                anyhow::Error::new(e).context(format!("cannot start container {id}: a poststart hook failed"))
            })
        });
    if let Err(error) = started {
        if let Err(cleanup) = destroy(container, true, reporter) {
            reporter.warn(&format!("cannot remove container {id} after its start failed: {cleanup:#}"));
        }
        return Err(error);
    }
    Ok(())
}

/// Builds the container (libcontainer's create). `detach` false keeps the init process
/// a child of this process, for `run` in the foreground; a console socket gets the pty
/// master of a terminal container. A failed create leaves nothing.
pub fn create(
    store: &Store,
    args: &CreateArgs,
    bundle: &CheckedBundle,
    detach: bool,
    console_socket: Option<PathBuf>,
) -> Result<Container> {
    working_dir::ensure(&bundle.spec, &bundle.rootfs)
        .with_context(|| format!("cannot create container {}", args.id))?;
    // libcontainer reads the spec from its bundle argument: give it a copy without the
    // options berth applies itself (the id cannot hold ':', so no container's directory).
    let spec_copy = match bundle.mounts.rewritten() {
        Some(spec) => Some(SpecCopy::write(store.root.join(format!("{}:spec", args.id)), &bundle.path, spec)?),
        None => None,
    };
    let libcontainer_bundle = spec_copy.as_ref().map_or(&bundle.path, |copy| &copy.dir);
    let built = ContainerBuilder::new(args.id.clone(), SyscallType::default())
        .with_executor(BerthExecutor::new(&args.id, !args.no_new_keyring))
        .with_root_path(&store.root)
        .and_then(|b| b.with_pid_file(args.pid_file.as_ref()))
        .map(|b| b.with_console_socket(console_socket.as_ref()).with_preserved_fds(args.preserve_fds))
        .and_then(|b| {
            b.as_init(libcontainer_bundle)
                .with_systemd(store.systemd_cgroup)
                // libcontainer accepts a console socket only when detached; the init stays
                // this process's child either way.
                .with_detach(detach || console_socket.is_some())
                .with_no_pivot(args.no_pivot)
                .build()
        });
    match built {
        Ok(mut container) => {
            let finished = restore_bundle(&mut container, &bundle.path, spec_copy)
                .and_then(|()| store.write_record(&container, bundle.rootfs.clone()))
                .and_then(|_| {
                    let init = container.pid().with_context(|| format!("container {} has no init process", args.id))?;
                    crate::loopback::bring_up_in_new_namespace(init, &bundle.spec)
                        .with_context(|| format!("cannot set up the network namespace of container {}", args.id))?;
                    apply_mounts_inside(init, bundle, &args.id)?;
                    cgroups::apply_oom_killer_setting(&container, &bundle.spec)
                });
            if let Err(e) = finished {
                remove_failed(store, &args.id);
                return Err(e);
            }
            Ok(container)
        }
        Err(e) => {
            remove_failed(store, &args.id);
            Err(anyhow::Error::new(e).context(format!("cannot create container {}", args.id)))
        }
    }
}

/// The mount work berth does itself in the container's mount namespace, in one helper:
/// the mount options libcontainer left to it, then per-mount propagation.
fn apply_mounts_inside(init: Pid, bundle: &CheckedBundle, id: &str) -> Result<()> {
    if !bundle.mounts.has_fixups() && !propagation::wanted(&bundle.spec) {
        return Ok(());
    }
    let host_proc = mount_options::open_host_proc()?;
    let host_parts = bundle.mounts.open_host_parts(init).with_context(|| format!("container {id}"))?;
    mount_namespace::run_inside(init, id, || {
        mount_options::apply_inside(&bundle.mounts, &host_proc, init, host_parts)?;
        propagation::apply_inside(&bundle.spec)
    })
}

/// Points the container's state back at the real bundle once libcontainer has read its
/// copy of the spec, and removes the copy.
fn restore_bundle(container: &mut Container, bundle: &Path, spec_copy: Option<SpecCopy>) -> Result<()> {
    if spec_copy.is_none() {
        return Ok(());
    }
    container.state.bundle = bundle.to_path_buf();
    container.save().with_context(|| format!("cannot save the state of container {}", container.id()))
}

/// Removes what a failed create left: processes, cgroups and the state directory.
fn remove_failed(store: &Store, id: &str) {
    let dir = store.container_dir(id);
    if !dir.exists() {
        return;
    }
    if let Ok(mut container) = Container::load(dir.clone()) {
        let _ = container.delete(true);
    }
    let _ = fs::remove_dir_all(&dir);
}
