//! The shim process itself: `start` (spawn the serving shim and print its address),
//! `delete` (clean up after a crashed shim), and serving the task service until shutdown.

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use containerd_shim::api::DeleteResponse;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::{Flags, StartOpts};

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
    // Every process the shim starts (berth, containers re-parented when berth exits) is
    // reaped by the shim.
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return fail(&format!("cannot become a subreaper: {}", std::io::Error::last_os_error()));
    }
    let result = match flags.action.as_str() {
        "start" => start(flags, ttrpc_address),
        "delete" => delete(&flags),
        _ => serve(&flags, &ttrpc_address),
    };
    match result {
        Ok(()) => 0,
        Err(e) => fail(&e),
    }
}

fn fail(message: &str) -> i32 {
    eprintln!("containerd-shim-berth-v2: {message}");
    1
}

/// Starts the serving shim (or finds the pod's) and prints only its address.
fn start(flags: Flags, ttrpc_address: String) -> Result<(), String> {
    let grouping = grouping(&flags.id);
    let opts = StartOpts {
        id: flags.id,
        publish_binary: flags.publish_binary,
        address: flags.address,
        ttrpc_address,
        namespace: flags.namespace,
        debug: flags.debug,
    };
    let (_pid, address) = containerd_shim::spawn(opts, &grouping, Vec::new())
        .map_err(|e| format!("cannot start the serving shim: {e}"))?;
    // The serving shim reads this at shutdown to remove its socket.
    containerd_shim::util::write_address(&address).map_err(|e| format!("cannot write the address file: {e}"))?;
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
    if let Err(e) = runtime.delete(&flags.id) {
        log::warn!("cleanup of {}: {e}", flags.id);
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

/// Serves the task API on the shim socket until containerd shuts the shim down.
fn serve(flags: &Flags, ttrpc_address: &str) -> Result<(), String> {
    if flags.socket.is_empty() {
        return Err("the serving shim needs -socket".into());
    }
    containerd_shim::logger::init(flags.debug, "info", &flags.namespace, &flags.id)
        .map_err(|e| format!("cannot open the shim log: {e}"))?;
    let path = flags.socket.trim_start_matches("unix://");
    let Some(listener) = listen(path)? else {
        // The pod's shim already serves this socket.
        containerd_shim::util::write_address(&flags.socket).map_err(|e| e.to_string())?;
        server_started();
        return Ok(());
    };
    server_started();
    let service = TaskService::new(Events::new(ttrpc_address, &flags.namespace), &flags.namespace);
    let served = crate::server::serve(listener, &service);
    let address = containerd_shim::util::read_address().unwrap_or_else(|_| flags.socket.clone());
    let _ = std::fs::remove_file(address.trim_start_matches("unix://"));
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

/// Closes stdout (containerd's `start` reads it to EOF) by pointing it at stderr.
fn server_started() {
    // SAFETY: dup2 of the standard descriptors.
    unsafe { libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO) };
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
