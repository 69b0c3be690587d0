//! The bundle a container is created from, checked before any state exists: `config.json`
//! read and checked, the rootfs, bind-mount sources, the SELinux labels berth refuses, and
//! the mount options planned; also paths from the caller made absolute.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use oci_spec::runtime::Spec;

use crate::cgroups;
use crate::cli::CreateArgs;
use crate::mount_options;
use crate::store::{check_id, Store};

/// A bundle checked before anything is created: its path, spec and rootfs.
pub struct CheckedBundle {
    pub path: PathBuf,
    pub spec: Spec,
    pub(crate) rootfs: PathBuf,
    /// The mount options libcontainer is given and those berth applies itself.
    pub(crate) mounts: mount_options::Plan,
}

impl CheckedBundle {
    pub fn wants_terminal(&self) -> bool {
        self.spec.process().as_ref().and_then(|p| p.terminal()).unwrap_or(false)
    }
}

/// Checks the id and the bundle, naming what is wrong before any state exists.
pub fn prepare(store: &Store, args: &CreateArgs) -> Result<CheckedBundle> {
    check_id(&args.id)?;
    if store.exists(&args.id) {
        bail!("container with id exists: {}", args.id);
    }
    let path = fs::canonicalize(&args.bundle)
        .with_context(|| format!("bundle {} does not exist or cannot be read", args.bundle.display()))?;
    let spec = load_spec(&path)?;
    cgroups::check_systemd_request(store.systemd_cgroup, &spec)?;
    refuse_selinux_labels(&spec).with_context(|| format!("invalid config.json in {}", path.display()))?;
    let rootfs = rootfs_of(&path, &spec)?;
    check_bind_sources(&path, &spec)?;
    check_namespace_paths(&spec)?;
    check_oom_score_adj(&spec)?;
    let mut mounts =
        mount_options::plan(&spec, &rootfs).with_context(|| format!("invalid config.json in {}", path.display()))?;
    if spec.linux().as_ref().is_some_and(|l| l.mount_label().is_some()) {
        // Past the refusal above, a mount label is empty or on a host without SELinux: it
        // can change nothing, as under runc.
        mounts.drop_mount_label(&spec, &rootfs);
    }
    if spec.process().as_ref().and_then(|p| p.no_new_privileges()) == Some(false) {
        mounts.unset_false_no_new_privileges(&spec, &rootfs);
    }
    store.ensure_root()?;
    Ok(CheckedBundle { path, spec, rootfs, mounts })
}

/// A namespace joined by path must exist, or create fails with a bare ENOENT: say which.
/// (A path pinned for another container, e.g. by berth-cni for `--network container:NAME`,
/// disappears when that container stops.)
fn check_namespace_paths(spec: &Spec) -> Result<()> {
    let namespaces = spec.linux().as_ref().and_then(|l| l.namespaces().clone()).unwrap_or_default();
    for namespace in namespaces {
        if let Some(path) = namespace.path() {
            if !path.exists() {
                bail!(
                    "the {} namespace to join, {}, does not exist: the process or container that held it \
                     may have stopped",
                    namespace.typ(),
                    path.display()
                );
            }
        }
    }
    Ok(())
}

/// Sets berth's own oom_score_adj to the process's, as libcontainer does next (the container
/// inherits it), so that a refusal names the value and the fix rather than surfacing as
/// libcontainer's bare "io error". The kernel refuses a value below the lowest one a
/// privileged process set for this process's ancestors unless it has CAP_SYS_RESOURCE,
/// which berth lacks where it runs inside a container. (containerd's CRI plugin asks -998
/// for every pod sandbox.)
fn check_oom_score_adj(spec: &Spec) -> Result<()> {
    let Some(wanted) = spec.process().as_ref().and_then(|p| p.oom_score_adj()) else { return Ok(()) };
    match fs::write("/proc/self/oom_score_adj", wanted.to_string()) {
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => bail!(
            "process.oomScoreAdj {wanted} is below the lowest oom_score_adj berth may set here without \
             CAP_SYS_RESOURCE: ask for a higher one (containerd's CRI plugin: restrict_oom_score_adj = true)"
        ),
        Err(e) => Err(e).with_context(|| format!("cannot set oom_score_adj {wanted}")),
        Ok(()) => Ok(()),
    }
}

/// selinuxfs's switch: present where the host runs SELinux (enforcing or permissive).
const SELINUX_ENFORCE: &str = "/sys/fs/selinux/enforce";

/// Whether labels would mean anything here. Where SELinux is off they cannot change what a
/// process may do, and runc (whose SELinux calls do nothing then) accepts them; so does berth.
fn selinux_enabled() -> bool {
    Path::new(SELINUX_ENFORCE).exists()
}

/// Refuses SELinux labels on a host that runs SELinux: libcontainer 0.7 does not apply
/// process labels, and a container started without the label it asked for would run under
/// a different policy than its caller meant.
pub fn refuse_selinux_labels(spec: &Spec) -> Result<()> {
    if let Some(process) = spec.process() {
        refuse_process_label(process)?;
    }
    match spec.linux().as_ref().and_then(|l| l.mount_label().as_deref()) {
        Some(label) if !label.is_empty() && selinux_enabled() => bail!(
            "linux.mountLabel is set and this host runs SELinux, but berth cannot apply SELinux labels; remove linux.mountLabel (or disable labeling in the caller)"
        ),
        _ => {}
    }
    Ok(())
}

/// Refuses a process's `selinuxLabel` (create, run and exec) on a host that runs SELinux,
/// where berth cannot apply it.
pub fn refuse_process_label(process: &oci_spec::runtime::Process) -> Result<()> {
    if process.selinux_label().as_deref().is_some_and(|label| !label.is_empty()) && selinux_enabled() {
        bail!("process.selinuxLabel is set and this host runs SELinux, but berth cannot apply SELinux labels; remove process.selinuxLabel (or disable labeling in the caller)");
    }
    Ok(())
}

/// Reads and checks `config.json`, naming the bundle in every error.
pub fn load_spec(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    if !path.exists() {
        bail!("bundle {} has no config.json (write one with `berth spec`)", bundle.display());
    }
    let text = fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let spec: Spec =
        serde_json::from_str(&text).with_context(|| format!("invalid config.json in {}", bundle.display()))?;
    // A spec may leave out the process until start (runtime-spec); one it gives needs args.
    if spec.process().as_ref().is_some_and(|p| p.args().as_ref().is_none_or(|a| a.is_empty())) {
        bail!("invalid config.json in {}: process.args must name the program to run", bundle.display());
    }
    Ok(spec)
}

/// The absolute rootfs path of a bundle, checked to exist.
fn rootfs_of(bundle: &Path, spec: &Spec) -> Result<PathBuf> {
    let root = spec.root().as_ref().with_context(|| format!("invalid config.json in {}: no root", bundle.display()))?;
    let rootfs = bundle.join(root.path());
    if !rootfs.is_dir() {
        bail!("rootfs {} of bundle {} is not a directory", rootfs.display(), bundle.display());
    }
    Ok(rootfs)
}

/// Names a bind mount whose source is missing, which libcontainer reports only as
/// "failed to prepare rootfs" from inside the new namespaces.
fn check_bind_sources(bundle: &Path, spec: &Spec) -> Result<()> {
    for mount in spec.mounts().iter().flatten() {
        let is_bind = mount.typ().as_deref() == Some("bind")
            || mount.options().iter().flatten().any(|o| o == "bind" || o == "rbind");
        let Some(source) = mount.source() else { continue };
        if is_bind && !bundle.join(source).exists() {
            bail!(
                "cannot mount {} into the container: bind source {} does not exist",
                mount.destination().display(),
                source.display()
            );
        }
    }
    Ok(())
}

/// A path made absolute against the current directory (libcontainer links the console
/// socket from another directory).
pub fn absolute(path: &PathBuf) -> PathBuf {
    std::env::current_dir().map(|cwd| cwd.join(path)).unwrap_or_else(|_| path.clone())
}
