//! The shim process itself: `start` (fork the serving shim and print its address),
//! `delete` (clean up after a crashed shim), and serving the task service until shutdown.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use containerd_shim::api::DeleteResponse;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::Flags;
use nix::unistd::ForkResult;

use crate::events::Events;
use crate::runtime::{BerthCli, Runtime};
use crate::task::TaskService;

/// The annotation CRI puts on every container of a pod, so one shim serves the pod.
const SANDBOX_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";

/// The environment variable naming containerd's ttrpc socket, for events.
const TTRPC_ADDRESS: &str = "TTRPC_ADDRESS";

/// Runs the action containerd asked for; returns the process's exit code.
pub fn main() -> i32 {
    let args: Vec<_> = std::env::args_os().collect();
    let flags = match containerd_shim::parse(&args[1..]) {
        Ok(flags) => flags,
        Err(e) => return fail(&format!("bad arguments: {e}")),
    };
    if flags.version {
        println!("containerd-shim-berth-v2:\n  Version: {}", env!("CARGO_PKG_VERSION"));
        return 0;
    }
    if flags.namespace.is_empty() {
        return fail("the shim needs -namespace");
    }
    let Ok(ttrpc_address) = std::env::var(TTRPC_ADDRESS) else {
        return fail(&format!("{TTRPC_ADDRESS} is not set; containerd sets it when it starts a shim"));
    };
    let result = match flags.action.as_str() {
        "start" => start(&flags, &ttrpc_address),
        "delete" => become_subreaper().and_then(|()| delete(&flags)),
        other => Err(format!("unknown action {other:?}: containerd runs the shim with `start` or `delete`")),
    };
    match result {
        Ok(()) => 0,
        Err(e) => fail(&e),
    }
}

/// Every process the shim starts (berth, containers re-parented when berth exits) is
/// reaped by the shim.
fn become_subreaper() -> Result<(), String> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(format!("cannot become a subreaper: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn fail(message: &str) -> i32 {
    eprintln!("containerd-shim-berth-v2: {message}");
    1
}

/// Starts the serving shim (or finds the pod's) and prints only its address. The socket is
/// bound here and the serving shim is this process's fork: no second program start, and
/// containerd's connection waits in the socket's backlog until the server accepts it.
fn start(flags: &Flags, ttrpc_address: &str) -> Result<(), String> {
    let address = containerd_shim::socket_address(&flags.address, &flags.namespace, &grouping(&flags.id));
    // The serving shim reads this at shutdown to remove its socket.
    containerd_shim::util::write_address(&address).map_err(|e| format!("cannot write the address file: {e}"))?;
    if let Some(listener) = listen(address.trim_start_matches("unix://"))? {
        // SAFETY: this process has one thread (nothing before this point starts one), so
        // the child is a whole copy of it.
        match unsafe { nix::unistd::fork() } {
            Ok(ForkResult::Child) => std::process::exit(match serve(listener, flags, ttrpc_address) {
                Ok(()) => 0,
                Err(e) => fail(&e),
            }),
            Ok(ForkResult::Parent { .. }) => drop(listener),
            Err(e) => return Err(format!("cannot fork the serving shim: {e}")),
        }
    }
    print!("{address}");
    std::io::stdout().flush().map_err(|e| e.to_string())
}

/// Force-deletes the container of a shim that is gone and prints the DeleteResponse.
fn delete(flags: &Flags) -> Result<(), String> {
    let bundle = std::env::current_dir().map_err(|e| format!("no bundle directory: {e}"))?;
    let runtime = match containerd_shim::util::read_options(&bundle) {
        Ok(o) => BerthCli::new(&o.binary_name, &o.root, &flags.namespace, o.systemd_cgroup, &bundle),
        Err(_) => BerthCli::new("", "", &flags.namespace, false, &bundle),
    };
    // containerd runs this after every shim that ends, also after a clean Delete: a
    // runc-compatible runtime keeps a container's state in ROOT/ID, and without it there is
    // nothing for the runtime to delete.
    if runtime.root.join(&flags.id).exists() {
        if let Err(e) = runtime.delete(&flags.id) {
            log::warn!("cleanup of {}: {e}", flags.id);
        }
    }
    if let Err(e) = crate::rootfs::unmount(&bundle.join("rootfs")) {
        log::warn!("cleanup of {}: {e}", flags.id);
    }
    // A shim that was killed left its socket; the last container of a group removes it.
    if grouping(&flags.id) == flags.id {
        let socket = containerd_shim::socket_address(&flags.address, &flags.namespace, &flags.id);
        let _ = std::fs::remove_file(socket.trim_start_matches("unix://"));
    }
    let at = containerd_shim::util::timestamp().map_err(|e| e.to_string())?;
    let response = DeleteResponse { exit_status: 128 + 9, exited_at: Some(at).into(), ..Default::default() };
    let bytes = response.write_to_bytes().map_err(|e| e.to_string())?;
    std::io::stdout().write_all(&bytes).map_err(|e| e.to_string())
}

/// The forked serving shim: lets go of `start`'s stdio (containerd reads it to EOF), then
/// serves the task API on `listener` until containerd shuts the shim down.
fn serve(listener: UnixListener, flags: &Flags, ttrpc_address: &str) -> Result<(), String> {
    detach_stdio()?;
    become_subreaper()?;
    containerd_shim::logger::init(flags.debug, "info", &flags.namespace, &flags.id)
        .map_err(|e| format!("cannot open the shim log: {e}"))?;
    let service = TaskService::new(Events::new(ttrpc_address, &flags.namespace), &flags.namespace);
    let served = crate::server::serve(listener, &service);
    if let Ok(address) = containerd_shim::util::read_address() {
        let _ = std::fs::remove_file(address.trim_start_matches("unix://"));
    }
    served
}

/// Binds the shim socket; None when a live shim already serves it (a stale one is replaced).
fn listen(path: &str) -> Result<Option<UnixListener>, String> {
    if let Some(dir) = Path::new(path).parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    match UnixListener::bind(path) {
        Ok(listener) => Ok(Some(listener)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if UnixStream::connect(path).is_ok() {
                return Ok(None);
            }
            std::fs::remove_file(path).map_err(|e| format!("cannot remove the stale socket {path}: {e}"))?;
            UnixListener::bind(path).map(Some).map_err(|e| format!("cannot listen on {path}: {e}"))
        }
        Err(e) => Err(format!("cannot listen on {path}: {e}")),
    }
}

/// Points stdin, stdout and stderr at /dev/null: containerd reads `start`'s output until
/// every copy of it is closed.
fn detach_stdio() -> Result<(), String> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("cannot open /dev/null: {e}"))?;
    for fd in [libc::STDIN_FILENO, libc::STDOUT_FILENO, libc::STDERR_FILENO] {
        nix::unistd::dup2(null.as_raw_fd(), fd).map_err(|e| format!("cannot point fd {fd} at /dev/null: {e}"))?;
    }
    Ok(())
}

/// The shim a container belongs to: its pod's (CRI's sandbox annotation), else its own.
/// containerd runs `start` and `delete` with the bundle as the working directory.
fn grouping(id: &str) -> String {
    std::fs::read_to_string("config.json")
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|spec| spec["annotations"][SANDBOX_ANNOTATION].as_str().map(String::from))
        .unwrap_or_else(|| id.to_string())
}
