//! A Kubernetes node without a kubelet, for the CRI tests and bench: Debian's containerd
//! started privately with its CRI plugin configured for berth (berth's shim as the default
//! runtime handler, containerd's runc shim driving berth as a second one), berth-cni's
//! lib/cni and a `berth-cni network create` conflist as its CNI, the images the test built
//! imported into `k8s.io`, and the pod and container configs a kubelet sends.

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
/// The sandbox ("pause") image the node's config names; the tests build it.
pub const SANDBOX_IMAGE: &str = "berth.test/pause:1";
/// The network every pod joins, as `berth-cni network create` writes it.
pub const POD_NETWORK: &str = "k8s-pods";
pub const POD_SUBNET: &str = "10.244.0.0/16";

pub struct CriNode {
    pub cri: CriClient,
    pub containerd: Containerd,
    pub cni: CniDirs,
    /// The test's private directory: pod logs go to `pods/NAME`.
    pub dir: PathBuf,
    /// Every pod's cgroup parent (below each hierarchy's root).
    pub cgroup_parent: String,
}

impl CriNode {
    /// Starts the node in `dir`. Only inside the test's private mount and network namespaces
    /// (`private_namespaces::run`): it mounts tmpfs on /run, where containerd keeps its
    /// shims' sockets, and on /var/lib, where the CRI plugin's libcni caches its results in
    /// a fixed /var/lib/cni (nothing else of the node's reads /var/lib).
    pub fn start(dir: &Path) -> CriNode {
        assert!(
            std::env::var_os(crate::private_namespaces::INSIDE).is_some(),
            "CriNode mounts over /run and /var/lib: start it only inside private_namespaces::run"
        );
        sh("mount -t tmpfs tmpfs /run && mkdir /run/netns && ip link set lo up
            mount -t tmpfs tmpfs /var/lib");
        let cni = CniDirs::under(dir);
        crate::plugin_dir::fill(&cni.bin, &bin("berth-cni"));
        cni.ok(&["network", "create", POD_NETWORK, "--subnet", POD_SUBNET]);
        let cgroup_parent =
            std::env::var("BERTH_CGROUP_PARENT").unwrap_or_else(|_| format!("berth-cri-{}", std::process::id()));
        let containerd = Containerd::start_setup(Setup {
            shim_dir: Some(&bin_dir()),
            plugins: plugin_config(dir, &cni),
            cri: true,
            ..Setup::default()
        });
        containerd.import(&sandbox_image());
        let cri = CriClient::connect(&containerd.socket()).expect("the CRI plugin does not answer");
        CriNode { cri, containerd, cni, dir: dir.to_path_buf(), cgroup_parent }
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
        let _ = self.cni.output(&["network", "rm", POD_NETWORK]);
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

/// The CRI plugin's section: both runtime handlers, the CNI directories, the sandbox image,
/// network namespaces under containerd's private state; oom_score_adj not below containerd's
/// own, since these machines (containers themselves) lack CAP_SYS_RESOURCE, as kind nodes do.
fn plugin_config(dir: &Path, cni: &CniDirs) -> String {
    format!(
        r#"[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{SANDBOX_IMAGE}"
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "{BERTH_SHIM}"
    snapshotter = "overlayfs"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{BERTH_SHIM}]
      runtime_type = "io.containerd.berth.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{RUNC_SHIM_BERTH}]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{RUNC_SHIM_BERTH}.options]
        BinaryName = "{berth}"
        Root = "{root}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bin_dir}"
    conf_dir = "{conf_dir}"
    max_conf_num = 1
"#,
        berth = bin("berth").display(),
        root = dir.join("runc-berth-root").display(),
        bin_dir = cni.bin.display(),
        conf_dir = cni.conf.display(),
    )
}

fn sh(script: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
