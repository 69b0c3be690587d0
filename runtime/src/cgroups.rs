//! berth's part in cgroups: `--systemd-cgroup` checked against this host's layout, the
//! cgroup manager of a created container, the OOM-killer switch libcontainer leaves out, and
//! the removal of a stopped container's cgroup v1 directories.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
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

/// The controllers libcgroups' v1 manager puts a container in, each with the names of the
/// mount points it recognises the controller's hierarchy by (comounted pairs included).
const V1_CONTROLLERS: [(&str, &[&str]); 12] = [
    ("cpu", &["cpu,cpuacct", "cpu"]),
    ("cpuacct", &["cpu,cpuacct", "cpuacct"]),
    ("cpuset", &["cpuset"]),
    ("devices", &["devices"]),
    ("hugetlb", &["hugetlb"]),
    ("memory", &["memory"]),
    ("pids", &["pids"]),
    ("perf_event", &["perf_event"]),
    ("blkio", &["blkio"]),
    ("net_prio", &["net_cls,net_prio", "net_prio,net_cls", "net_prio"]),
    ("net_cls", &["net_cls,net_prio", "net_prio,net_cls", "net_cls"]),
    ("freezer", &["freezer"]),
];

/// The container's directory in each cgroup v1 hierarchy, found as libcgroups' v1 manager
/// finds them (the first cgroup mount named for a controller this process has a cgroup
/// in, joined with `cgroup_path`), from one read of the mount table and of
/// /proc/self/cgroup: the manager reads both once per controller through checked procfs
/// opens, some 500 syscalls on every delete.
fn v1_directories(cgroup_path: &Path) -> Result<Vec<PathBuf>> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").context("cannot read /proc/self/mountinfo")?;
    let own = std::fs::read_to_string("/proc/self/cgroup").context("cannot read /proc/self/cgroup")?;
    let cgroup_mounts: Vec<PathBuf> = mounts.lines().filter_map(cgroup_v1_mount_point).collect();
    let relative = cgroup_path.strip_prefix("/").unwrap_or(cgroup_path);
    let mut directories = Vec::new();
    for (controller, names) in V1_CONTROLLERS {
        let joined =
            own.lines().any(|line| line.split(':').nth(1).is_some_and(|list| list.split(',').any(|c| c == controller)));
        let mount = cgroup_mounts.iter().find(|point| names.iter().any(|name| point.ends_with(name)));
        if let (true, Some(mount)) = (joined, mount) {
            let directory = mount.join(relative);
            if !directories.contains(&directory) {
                directories.push(directory);
            }
        }
    }
    Ok(directories)
}

/// The mount point of a mountinfo line whose filesystem is cgroup (v1).
fn cgroup_v1_mount_point(line: &str) -> Option<PathBuf> {
    let mut fields = line.split(' ');
    let point = fields.nth(4)?;
    let fs_type = fields.skip_while(|field| *field != "-").nth(1)?;
    (fs_type == "cgroup").then(|| PathBuf::from(unescape_mountinfo(point)))
}

/// A mountinfo path with its octal escapes (space, tab, newline, backslash) undone.
fn unescape_mountinfo(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        match rest.get(at + 1..at + 4).and_then(|octal| u8::from_str_radix(octal, 8).ok()) {
            Some(byte) => {
                out.push(byte as char);
                rest = &rest[at + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Removes a stopped container's cgroups where berth can do it for libcontainer: cgroupfs on
/// a cgroup v1 (or hybrid) host. Processes still in them are killed first (the init is
/// gone, but a container sharing the host's pid namespace may leave others), and a
/// directory that stays busy is retried until they have exited. Returns false, having
/// done nothing, where libcontainer must remove them (systemd's driver, a v2 host, no path).
pub fn remove_v1(cgroup_path: &Path, systemd: bool) -> Result<bool> {
    if systemd || cgroup_path.as_os_str().is_empty() || unified_host() || !Path::new("/sys/fs/cgroup").exists() {
        return Ok(false);
    }
    for directory in v1_directories(cgroup_path)? {
        remove_directory(&directory)?;
    }
    Ok(true)
}

/// Removes one cgroup directory; while processes keep it busy (the init is gone, but a
/// container sharing the host's pid namespace may leave others), kills them and retries for
/// up to 5 s. An empty directory, the usual case, takes one rmdir.
fn remove_directory(directory: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match std::fs::remove_dir(directory) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            // Killed processes leave their cgroups as they exit.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                kill_members(directory)?;
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => return Err(e).with_context(|| format!("cannot remove cgroup {}", directory.display())),
        }
    }
}

/// SIGKILLs every process in one cgroup directory.
fn kill_members(directory: &Path) -> Result<()> {
    let procs = match std::fs::read_to_string(directory.join("cgroup.procs")) {
        Ok(procs) => procs,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}/cgroup.procs", directory.display())),
    };
    for pid in procs.lines().filter_map(|line| line.trim().parse::<i32>().ok()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_v1_mounts_are_read_from_mountinfo() {
        let cpu = "31 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct";
        assert_eq!(cgroup_v1_mount_point(cpu), Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")));
        let unified = "30 25 0:26 / /sys/fs/cgroup/unified rw,nosuid shared:9 - cgroup2 cgroup2 rw";
        assert_eq!(cgroup_v1_mount_point(unified), None);
        let spaced = "40 25 0:30 / /mnt/a\\040b rw shared:1 master:2 - cgroup cgroup rw,memory";
        assert_eq!(cgroup_v1_mount_point(spaced), Some(PathBuf::from("/mnt/a b")));
    }
}
