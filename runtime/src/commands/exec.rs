//! `exec`: runs a new process in a running container, from a process JSON or from flags.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::ContainerStatus;
use libcontainer::syscall::syscall::SyscallType;
use oci_spec::runtime::Process;

use crate::bundle;
use crate::cli::ExecArgs;
use crate::exec_seccomp::ExecSeccomp;
use crate::executor::BerthExecutor;
use crate::store::Store;
use crate::terminal::{ConsoleReceiver, Proxy};

/// Returns the exit code berth should exit with (the process's, in the foreground).
pub fn exec(store: &Store, args: &ExecArgs) -> Result<i32> {
    let (container, _) = store.load(&args.id)?;
    match container.status() {
        ContainerStatus::Running => {}
        ContainerStatus::Paused if args.ignore_paused => {}
        ContainerStatus::Paused => {
            bail!("cannot exec in a paused container {} (resume it, or pass --ignore-paused)", args.id)
        }
        _ => bail!("cannot exec in a stopped container: container not running: {}", args.id),
    }
    let spec = bundle::load_spec(container.bundle())?;
    let mut process: Process = match &args.process {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read process file {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| format!("invalid process JSON in {}", path.display()))?
        }
        None if args.command.is_empty() => bail!("exec needs a command after the container id, or --process FILE"),
        None => crate::exec_process::from_flags(&spec, container.bundle(), args)?,
    };
    bundle::refuse_process_label(&process).with_context(|| format!("cannot exec in container {}", args.id))?;
    let terminal = process.terminal().unwrap_or(false);
    if terminal && args.detach && args.console_socket.is_none() {
        bail!("a detached exec with a terminal needs --console-socket to receive it");
    }
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().clone());
    let seccomp = seccomp
        .map(|profile| ExecSeccomp::prepare(profile, &mut process))
        .transpose()
        .with_context(|| format!("cannot exec in container {}", args.id))?;
    let container_dir = store.container_dir(&args.id);
    // libcontainer reads the process from a file.
    let process_file = container_dir.join(format!("exec-{}.json", std::process::id()));
    std::fs::write(&process_file, serde_json::to_vec(&process)?)
        .with_context(|| format!("cannot write {}", process_file.display()))?;
    let receiver = if terminal && args.console_socket.is_none() {
        Some(ConsoleReceiver::listen(&store.root, &args.id)?)
    } else {
        None
    };
    let console_socket = receiver
        .as_ref()
        .map(|r| r.socket().to_path_buf())
        .or_else(|| args.console_socket.as_ref().map(bundle::absolute));
    let sockets = TenantSockets::name(&container_dir);
    let built = ContainerBuilder::new(args.id.clone(), SyscallType::default())
        .with_executor(BerthExecutor::for_exec(&args.id, seccomp))
        .with_root_path(&store.root)
        .and_then(|b| b.with_pid_file(args.pid_file.as_ref()))
        .map(|b| b.with_console_socket(console_socket.as_ref()).with_preserved_fds(args.preserve_fds))
        .and_then(|b| {
            b.as_tenant()
                // libcontainer wants a console socket only for detached processes; berth
                // proxies a foreground terminal itself through its own socket.
                .with_detach(args.detach || console_socket.is_some())
                .with_process(Some(&process_file))
                .with_ignore_paused(args.ignore_paused)
                .with_sub_cgroup(args.cgroup.clone())
                .build()
        });
    let _ = std::fs::remove_file(&process_file);
    sockets.remove();
    let pid = match built {
        Ok(pid) => pid,
        Err(e) => {
            if let Some(receiver) = receiver {
                receiver.abandon();
            }
            return Err(anyhow::Error::new(e).context(format!("cannot exec in container {}", args.id)));
        }
    };
    if args.detach {
        return Ok(0);
    }
    // Signals are blocked since berth started (`foreground::block_all`): what arrived
    // meanwhile is forwarded.
    let proxy = match receiver {
        Some(receiver) => Some(Proxy::start(receiver.receive()?)?),
        None => None,
    };
    let code = crate::foreground::wait_forwarding(pid, || {
        if let Some(proxy) = &proxy {
            proxy.resize();
        }
    });
    if let Some(proxy) = proxy {
        proxy.finish();
    }
    code
}

/// The sockets libcontainer's exec makes in the container's directory and never removes:
/// the start notification's socket and the console socket's link, each named
/// `tenant-{notify,tty}-{random:x}.sock` from the thread's `fastrand` generator (two draws,
/// in that order). berth seeds that generator, so it knows both names, and removes them
/// once the process runs. Should libcontainer name them otherwise, nothing is removed
/// (the names drawn here are checked to be free first, so no other exec's are).
struct TenantSockets {
    paths: [PathBuf; 2],
}

impl TenantSockets {
    fn name(container_dir: &Path) -> TenantSockets {
        loop {
            let seed = fastrand::u64(..);
            let mut draws = fastrand::Rng::with_seed(seed);
            let mut path = |prefix: &str| container_dir.join(format!("{prefix}{:x}.sock", draws.i32(..)));
            let paths = [path("tenant-notify-"), path("tenant-tty-")];
            if paths.iter().all(|p| p.symlink_metadata().is_err()) {
                fastrand::seed(seed);
                return TenantSockets { paths };
            }
        }
    }

    fn remove(self) {
        for path in &self.paths {
            let _ = std::fs::remove_file(path);
        }
    }
}
