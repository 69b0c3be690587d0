//! A Kubernetes node without a kubelet, for the CRI tests and bench: Debian's containerd
//! started privately with its CRI plugin configured for one runtime stack (berth's: berth's
//! shim as the default runtime handler, containerd's runc shim driving berth as a second one,
//! berth-cni's lib/cni; or the reference the bench compares it with: containerd's runc shim
//! with runc, Debian's reference plugins), a `berth-cni network create` conflist as its CNI,
//! the images the test built imported into `k8s.io`, and the pod and container configs a
//! kubelet sends.

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_cri::v1::*;

use crate::bins::{bin, bin_dir};
use crate::cni_dirs::CniDirs;
use crate::containerd::{Containerd, Setup};
use crate::cri_client::CriClient;
use crate::oci_image::{LayerDir, OciArchive};

/// The default handler: `io.containerd.berth.v2`, berth's shim found on PATH.
pub const BERTH_SHIM: &str = "berth";
/// containerd's Go runc shim with `BinaryName` = berth.
pub const RUNC_SHIM_BERTH: &str = "runc-berth";
/// The reference stack's default handler: containerd's Go runc shim with Debian's runc.
pub const RUNC_SHIM_RUNC: &str = "runc";
/// The sandbox ("pause") image the node's config names; the tests build it.
pub const SANDBOX_IMAGE: &str = "berth.test/pause:1";
/// The network every pod joins, as `berth-cni network create` writes it.
pub const POD_NETWORK: &str = "k8s-pods";
pub const POD_SUBNET: &str = "10.244.0.0/16";
/// The reference stack's network: the same conflist with its own name, subnet (of the same
/// size) and bridge, so that both stacks' nodes can run side by side in one namespace.
pub const REFERENCE_NETWORK: &str = "k8s-ref";
pub const REFERENCE_SUBNET: &str = "10.245.0.0/16";
pub const REFERENCE_BRIDGE: &str = "cni-ref0";
/// Debian's runc and reference CNI plugins.
pub const DEBIAN_RUNC: &str = "/usr/sbin/runc";
pub const REFERENCE_CNI_DIR: &str = "/usr/lib/cni";

/// The runtime stack a node's CRI plugin runs pods on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Stack {
    /// berth's shim (the default handler), containerd's runc shim driving berth (a second
    /// handler), berth-cni's plugins.
    Berth,
    /// containerd's Go runc shim with Debian's runc (the default handler), Debian's
    /// reference plugins (containernetworking-plugins 1.1.1).
    Reference,
}

/// The executables a node's containerd runs: the installed ones, or (the bench's shares
/// pass) wrappers that log each call's time around them.
pub struct Executables {
    /// Searched before PATH for shim binaries.
    pub shim_dir: Option<PathBuf>,
    /// The runtime containerd's runc shim runs (its `BinaryName`).
    pub runtime: PathBuf,
    /// The CRI plugin's CNI `bin_dir`.
    pub cni_bin: PathBuf,
}

impl Stack {
    /// The stack's installed executables; berth's CNI directory is made below `dir` as
    /// `make install` fills lib/cni.
    pub fn executables(self, dir: &Path) -> Executables {
        match self {
            Stack::Berth => {
                let cni_bin = dir.join("lib/cni");
                crate::plugin_dir::fill(&cni_bin, &bin("berth-cni"));
                Executables { shim_dir: Some(bin_dir()), runtime: bin("berth"), cni_bin }
            }
            Stack::Reference => Executables {
                shim_dir: None,
                runtime: PathBuf::from(DEBIAN_RUNC),
                cni_bin: PathBuf::from(REFERENCE_CNI_DIR),
            },
        }
    }

    /// The network the stack's pods join.
    pub fn network(self) -> &'static str {
        match self {
            Stack::Berth => POD_NETWORK,
            Stack::Reference => REFERENCE_NETWORK,
        }
    }
}

pub struct CriNode {
    pub cri: CriClient,
    pub containerd: Containerd,
    pub cni: CniDirs,
    pub stack: Stack,
    /// The test's private directory: pod logs go to `pods/NAME`.
    pub dir: PathBuf,
    /// Every pod's cgroup parent (below each hierarchy's root).
    pub cgroup_parent: String,
}

impl CriNode {
    /// Starts berth's node in `dir`. Only inside the test's private mount and network
    /// namespaces (`private_namespaces::run`), whose /run and /var/lib it makes private.
    pub fn start(dir: &Path) -> CriNode {
        crate::private_namespaces::make_run_and_var_lib_private();
        CriNode::start_stack(dir, Stack::Berth, Stack::Berth.executables(dir))
    }

    /// Starts a node of `stack` running `executables` in `dir` (a directory of its own:
    /// several nodes run side by side in one namespace), after
    /// `private_namespaces::make_run_and_var_lib_private`.
    pub fn start_stack(dir: &Path, stack: Stack, executables: Executables) -> CriNode {
        let cni = CniDirs::under(dir);
        match stack {
            Stack::Berth => {
                cni.ok(&["network", "create", POD_NETWORK, "--subnet", POD_SUBNET]);
            }
            Stack::Reference => write_reference_network(&cni),
        }
        let cgroup_parent =
            std::env::var("BERTH_CGROUP_PARENT").unwrap_or_else(|_| format!("berth-cri-{}", std::process::id()));
        let containerd = Containerd::start_setup(Setup {
            shim_dir: executables.shim_dir.as_deref(),
            plugins: plugin_config(dir, stack, &executables, &cni),
            cri: true,
            ..Setup::default()
        });
        containerd.import(&sandbox_image());
        let cri = CriClient::connect(&containerd.socket()).expect("the CRI plugin does not answer");
        CriNode { cri, containerd, cni, stack, dir: dir.to_path_buf(), cgroup_parent }
    }

    /// What a kubelet sends for pod `name`: metadata, hostname, log directory, cgroup parent
    /// and the pod's published ports.
    pub fn pod_config(&self, name: &str, port_mappings: Vec<PortMapping>) -> PodSandboxConfig {
        let log_directory = self.dir.join("pods").join(name);
        std::fs::create_dir_all(&log_directory).unwrap();
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.to_string(),
                uid: format!("uid-{name}"),
                namespace: "default".to_string(),
                attempt: 0,
            }),
            hostname: name.to_string(),
            log_directory: log_directory.display().to_string(),
            port_mappings,
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: format!("/{}", self.cgroup_parent),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(kubelet_namespaces()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Container `name` of `image` running `command`, logging to `NAME.log` in its pod's
    /// log directory.
    pub fn container_config(&self, name: &str, image: &str, command: &[&str]) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata { name: name.to_string(), attempt: 0 }),
            image: Some(ImageSpec { image: image.to_string(), ..Default::default() }),
            command: command.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}.log"),
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(kubelet_namespaces()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The log file of container `name` in pod `pod`, as kubelet reads it.
    pub fn log(&self, pod: &str, name: &str) -> String {
        std::fs::read_to_string(self.dir.join("pods").join(pod).join(format!("{name}.log"))).unwrap_or_default()
    }

    /// The cgroup directory of container `id` in hierarchy `controller`.
    pub fn cgroup(&self, controller: &str, id: &str) -> PathBuf {
        Path::new("/sys/fs/cgroup").join(controller).join(&self.cgroup_parent).join(id)
    }
}

impl Drop for CriNode {
    /// Pods first (through the CRI, as a draining kubelet does), then containerd, then the
    /// network.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("containerd's log:\n{}", self.containerd.log());
        }
        for pod in self.cri.list_pods().unwrap_or_default() {
            let _ = self.cri.remove_pod(&pod);
        }
        match self.stack {
            Stack::Berth => {
                let _ = self.cni.output(&["network", "rm", POD_NETWORK]);
            }
            // The reference bridge plugin leaves its bridge when the last pod goes.
            Stack::Reference => {
                let _ = Command::new("ip").args(["link", "del", REFERENCE_BRIDGE]).output();
            }
        }
    }
}

/// What kubelet asks for a pod without `shareProcessNamespace`: the pod's network and IPC,
/// a process namespace per container.
fn kubelet_namespaces() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// The sandbox image: busybox sleeping until the CRI plugin kills it.
pub fn sandbox_image() -> OciArchive {
    OciArchive::build(SANDBOX_IMAGE, &[LayerDir::busybox()], &["sleep", "2147483647"])
}

/// The reference stack's network: what `berth-cni network create` writes (bridge, portmap,
/// firewall and tuning; host-local with its store in the node's state), with its own name,
/// subnet and bridge; the reference plugins read it as written (CNI 1.0.0).
fn write_reference_network(cni: &CniDirs) {
    cni.ok(&["network", "create", REFERENCE_NETWORK, "--subnet", REFERENCE_SUBNET]);
    let path = cni.conf.join(format!("{REFERENCE_NETWORK}.conflist"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut conflist: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    conflist["plugins"][0]["bridge"] = REFERENCE_BRIDGE.into();
    std::fs::write(&path, serde_json::to_string_pretty(&conflist).unwrap())
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// The CRI plugin's section: the stack's runtime handlers, the CNI directories, the sandbox
/// image, network namespaces under containerd's private state; oom_score_adj not below
/// containerd's own, since these machines (containers themselves) lack CAP_SYS_RESOURCE,
/// as kind nodes do.
fn plugin_config(dir: &Path, stack: Stack, executables: &Executables, cni: &CniDirs) -> String {
    let runc_handler = |name: &str| {
        format!(
            r#"    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{name}]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{name}.options]
        BinaryName = "{runtime}"
        Root = "{root}"
"#,
            runtime = executables.runtime.display(),
            root = dir.join(format!("{name}-root")).display(),
        )
    };
    let (default_runtime, runtimes) = match stack {
        Stack::Berth => (
            BERTH_SHIM,
            format!(
                r#"    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{BERTH_SHIM}]
      runtime_type = "io.containerd.berth.v2"
{}"#,
                runc_handler(RUNC_SHIM_BERTH)
            ),
        ),
        Stack::Reference => (RUNC_SHIM_RUNC, runc_handler(RUNC_SHIM_RUNC)),
    };
    format!(
        r#"[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{SANDBOX_IMAGE}"
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "{default_runtime}"
    snapshotter = "overlayfs"
{runtimes}  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bin_dir}"
    conf_dir = "{conf_dir}"
    max_conf_num = 1
"#,
        bin_dir = executables.cni_bin.display(),
        conf_dir = cni.conf.display(),
    )
}
