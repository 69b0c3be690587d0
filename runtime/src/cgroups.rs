//! berth's part in cgroups: `--systemd-cgroup` checked against this host's layout, the
//! cgroup manager of a created container, and the OOM-killer switch libcontainer leaves out.

use std::path::Path;

use anyhow::{bail, Result};
use oci_spec::runtime::Spec;

/// True when the unified (v2) hierarchy is mounted at /sys/fs/cgroup itself.
pub fn unified_host() -> bool {
    nix::sys::statfs::statfs("/sys/fs/cgroup")
        .map(|fs| fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// `--systemd-cgroup` with a `slice:prefix:name` cgroupsPath needs systemd on a cgroup v2
/// host. On a v1 or hybrid host berth manages cgroups through cgroupfs, so such a path is
/// refused with what to do instead; a plain path is used as it is.
pub fn check_systemd_request(systemd_cgroup: bool, spec: &Spec) -> Result<()> {
    let path = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone());
    let Some(path) = path else { return Ok(()) };
    let systemd_form = path.to_string_lossy().matches(':').count() == 2;
    if !systemd_form {
        return Ok(());
    }
    if !systemd_cgroup {
        bail!(
            "cgroupsPath {:?} is in systemd's slice:prefix:name form; pass --systemd-cgroup or use a path",
            path.display()
        );
    }
    if !unified_host() || !Path::new("/run/systemd/system").exists() {
        bail!(
            "--systemd-cgroup with cgroupsPath {:?} needs systemd as init on a cgroup v2 host; this host \
             manages cgroups through cgroupfs (v1): drop --systemd-cgroup and give cgroupsPath as a path",
            path.display()
        );
    }
    Ok(())
}

/// The cgroup manager of a created container, from the cgroup path saved at create.
pub fn manager(container: &libcontainer::container::Container) -> Result<libcgroups::common::AnyCgroupManager> {
    let config = container
        .spec()
        .map_err(|e| anyhow::anyhow!("cannot read the saved config of container {}: {e}", container.id()))?;
    libcgroups::common::create_cgroup_manager(libcgroups::common::CgroupConfig {
        cgroup_path: config.cgroup_path,
        systemd_cgroup: container.systemd(),
        container_name: container.id().to_string(),
    })
    .map_err(|e| anyhow::anyhow!("cannot open the cgroups of container {}: {e}", container.id()))
}

/// Applies `memory.disableOOMKiller`, which libcontainer 0.7 leaves out of create (it
/// always passes false); only cgroup v1 has the switch.
pub fn apply_oom_killer_setting(container: &libcontainer::container::Container, spec: &Spec) -> Result<()> {
    let Some(resources) = spec.linux().as_ref().and_then(|l| l.resources().clone()) else { return Ok(()) };
    if !disables_oom_killer(&resources) {
        return Ok(());
    }
    use libcgroups::common::CgroupManager;
    manager(container)?
        .apply(&libcgroups::common::ControllerOpt {
            resources: &resources,
            disable_oom_killer: true,
            oom_score_adj: None,
            freezer_state: None,
        })
        .map_err(|e| anyhow::anyhow!("cannot disable the OOM killer of container {}: {e}", container.id()))
}

/// True when the resources ask for the OOM killer to be disabled.
pub fn disables_oom_killer(resources: &oci_spec::runtime::LinuxResources) -> bool {
    resources.memory().as_ref().and_then(|m| m.disable_oom_killer()).unwrap_or(false)
}
