//! The shim process itself: `start` (spawn the serving shim and print its address),
//! `delete` (clean up after a crashed shim), and serving the task service until shutdown.

use std::sync::Arc;

use containerd_shim::api::DeleteResponse;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{spawn, Config, Error, ExitSignal, Flags, Shim, StartOpts};

use crate::events::Events;
use crate::runtime::Runtime;
use crate::task::TaskService;

/// The annotation CRI puts on every container of a pod, so one shim serves the pod.
const SANDBOX_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";

pub struct BerthShim {
    id: String,
    namespace: String,
    /// containerd's address, from which shim socket paths are derived.
    address: String,
    exit: Arc<ExitSignal>,
}

impl Shim for BerthShim {
    type T = TaskService;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        BerthShim { id: args.id.clone(), namespace: args.namespace.clone(), address: args.address.clone(), exit: Arc::new(ExitSignal::default()) }
    }

    fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        let grouping = grouping(&opts.id);
        let (_pid, address) = spawn(opts, &grouping, Vec::new())?;
        // The serving shim reads this at shutdown to remove its socket.
        containerd_shim::util::write_address(&address)?;
        Ok(address)
    }

    fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        let bundle = std::env::current_dir().map_err(|e| Error::Other(format!("no bundle directory: {e}")))?;
        let options = containerd_shim::util::read_options(&bundle).ok();
        let runtime = match options {
            Some(o) => Runtime::new(&o.binary_name, &o.root, &self.namespace, o.systemd_cgroup),
            None => Runtime::new("", "", &self.namespace, false),
        };
        let log = bundle.join("log.json");
        if let Err(e) = runtime.call(&log, &["delete", "--force", &self.id], None) {
            log::warn!("cleanup of {}: {e}", self.id);
        }
        let _ = containerd_shim::mount::umount_recursive(bundle.join("rootfs").to_str(), 0);
        // A shim that was killed left its socket; the last container of a group removes it.
        let socket = containerd_shim::socket_address(&self.address, &self.namespace, &grouping(&self.id));
        if grouping(&self.id) == self.id {
            let _ = std::fs::remove_file(socket.trim_start_matches("unix://"));
        }
        Ok(DeleteResponse { exit_status: 128 + 9, exited_at: Some(containerd_shim::util::timestamp()?).into(), ..Default::default() })
    }

    fn wait(&mut self) {
        self.exit.wait();
    }

    fn create_task_service(&self, publisher: RemotePublisher) -> Self::T {
        TaskService::new(Events::new(publisher, &self.namespace), &self.namespace, self.exit.clone())
    }
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
