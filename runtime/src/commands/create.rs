//! `create`: sets up a container from a bundle; its process waits for `start`.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use oci_spec::runtime::Spec;

use crate::cli::CreateArgs;
use crate::executor::BerthExecutor;
use crate::cgroups;
use crate::mount_options::{self, SpecCopy};
use crate::store::{check_id, Store};

pub fn create(store: &Store, args: &CreateArgs) -> Result<()> {
    let bundle = prepare(store, args)?;
    let console_socket = args.console_socket.as_ref().map(super::exec::absolute);
    build(store, args, &bundle, true, console_socket).map(|_| ())
}

/// A bundle checked before anything is created: its path, spec and rootfs.
pub struct CheckedBundle {
    pub path: PathBuf,
    pub spec: Spec,
    rootfs: PathBuf,
    /// The mount options libcontainer is given and those berth applies itself.
    mounts: mount_options::Plan,
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
    let mounts = mount_options::plan(&spec, &rootfs).with_context(|| format!("invalid config.json in {}", path.display()))?;
    store.ensure_root()?;
    Ok(CheckedBundle { path, spec, rootfs, mounts })
}

/// Builds the container (libcontainer's create). `detach` false keeps the init process
/// a child of this process, for `run` in the foreground; a console socket gets the pty
/// master of a terminal container. A failed create leaves nothing.
pub fn build(
    store: &Store,
    args: &CreateArgs,
    bundle: &CheckedBundle,
    detach: bool,
    console_socket: Option<PathBuf>,
) -> Result<Container> {
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
            let finished = restore_bundle(&mut container, &bundle.path, spec_copy).and_then(|()| store.write_record(&container, bundle.rootfs.clone())).and_then(|_| {
                let init = container.pid().with_context(|| format!("container {} has no init process", args.id))?;
                crate::loopback::bring_up_in_new_namespace(init, &bundle.spec)
                    .with_context(|| format!("cannot set up the network namespace of container {}", args.id))?;
                mount_options::apply(init, &bundle.mounts, &args.id)?;
                crate::propagation::apply(init, &bundle.spec, &args.id)?;
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

/// Refuses SELinux labels: libcontainer 0.7 does not apply them, and a container started
/// without the label it asked for would run under a different policy than its caller meant.
pub fn refuse_selinux_labels(spec: &Spec) -> Result<()> {
    if let Some(process) = spec.process() {
        refuse_process_label(process)?;
    }
    match spec.linux().as_ref().and_then(|l| l.mount_label().as_deref()) {
        None => {}
        // libcontainer 0.7 hands even an empty label to the kernel as a mount context,
        // which fails create with "failed to mount path as masked".
        Some("") => bail!("linux.mountLabel is an empty string, which berth cannot pass on; remove linux.mountLabel"),
        Some(_) => bail!("linux.mountLabel is set, but berth cannot apply SELinux labels; remove linux.mountLabel (or disable labeling in the caller)"),
    }
    Ok(())
}

/// Refuses a process's `selinuxLabel` (create, run and exec), which berth cannot apply.
pub fn refuse_process_label(process: &oci_spec::runtime::Process) -> Result<()> {
    if process.selinux_label().as_deref().is_some_and(|label| !label.is_empty()) {
        bail!("process.selinuxLabel is set, but berth cannot apply SELinux labels; remove process.selinuxLabel (or disable labeling in the caller)");
    }
    Ok(())
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

/// Reads and checks `config.json`, naming the bundle in every error.
pub fn load_spec(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    if !path.exists() {
        bail!("bundle {} has no config.json (write one with `berth spec`)", bundle.display());
    }
    let text = fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let spec: Spec = serde_json::from_str(&text)
        .with_context(|| format!("invalid config.json in {}", bundle.display()))?;
    // A spec may leave out the process until start (runtime-spec); one it gives needs args.
    if spec.process().as_ref().is_some_and(|p| p.args().as_ref().is_none_or(|a| a.is_empty())) {
        bail!("invalid config.json in {}: process.args must name the program to run", bundle.display());
    }
    Ok(spec)
}

/// The absolute rootfs path of a bundle, checked to exist.
fn rootfs_of(bundle: &Path, spec: &Spec) -> Result<PathBuf> {
    let root = spec
        .root()
        .as_ref()
        .with_context(|| format!("invalid config.json in {}: no root", bundle.display()))?;
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
