//! The cgroup v1 mount (`"type": "cgroup"`) of a container that joins a PID namespace by
//! path, which berth makes itself. libcontainer 0.7 picks the cgroups to show from its own
//! pid, and takes a pid of 0 from getppid for "a new PID namespace": in a joined namespace
//! that pid is one inside the namespace (11, say), which the host's /proc does not know
//! (create fails with NotFound) or knows as an unrelated process. So libcontainer's copy of
//! the spec holds, at the cgroup mount's place among the mounts, the tmpfs it would have
//! made first (nosuid, nodev, noexec, mode=755); after create, berth binds the container's
//! own cgroup directory of each v1 hierarchy mounted under /sys/fs/cgroup on the host into
//! it, named after the hierarchy's directory, with the mount's per-mount flags (`ro` and
//! the others, as runc sets them), and links each controller of a co-mounted hierarchy to
//! it (`cpu` -> `cpu,cpuacct`). The directories are cloned on the host (open_tree) before
//! the helper enters the container's mount namespace, where the host's tree is out of reach.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, Mount, MountBuilder, Spec};

/// Where libcontainer (and this module) looks for the host's v1 hierarchies.
const HOST_CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// True when berth must make the spec's cgroup mounts: the container joins a PID namespace
/// by path and the host mounts cgroup v1 hierarchies (legacy or hybrid layout).
pub fn made_by_berth(spec: &Spec) -> bool {
    let joins_pid_namespace =
        spec.linux().as_ref().and_then(|linux| linux.namespaces().as_ref()).is_some_and(|namespaces| {
            namespaces.iter().any(|ns| ns.typ() == LinuxNamespaceType::Pid && ns.path().is_some())
        });
    joins_pid_namespace && !crate::cgroups::unified_host()
}

pub fn is_cgroup_mount(mount: &Mount) -> bool {
    mount.typ().as_deref() == Some("cgroup")
}

/// The tmpfs libcontainer makes at the cgroup mount's place: the one its own cgroup v1
/// mount (and runc's) starts with.
pub fn placeholder(mount: &Mount) -> Result<Mount> {
    MountBuilder::default()
        .destination(mount.destination().clone())
        .typ("tmpfs")
        .source("tmpfs")
        .options(["nosuid", "nodev", "noexec", "mode=755"].map(String::from).to_vec())
        .build()
        .with_context(|| format!("cannot build the tmpfs for cgroup mount {}", mount.destination().display()))
}

/// The container's cgroup directory of one v1 hierarchy, cloned from the host with the
/// mount's flags set, ready to be attached in the container.
pub struct HierarchyTree {
    /// The hierarchy's directory name on the host (`memory`, `cpu,cpuacct`, `systemd`).
    name: String,
    tree: OwnedFd,
}

/// One cgroup v1 mount of the host, from its mountinfo line.
#[derive(Debug, PartialEq)]
struct HostHierarchy {
    mount_point: PathBuf,
    /// The hierarchy's path that is mounted there (`/` unless the host is itself confined).
    root: PathBuf,
    /// The superblock options: the controllers (and `name=`) among others.
    options: Vec<String>,
}

/// The host's v1 hierarchies under /sys/fs/cgroup, in mount table order.
fn host_hierarchies(mountinfo: &str) -> Vec<HostHierarchy> {
    let mut hierarchies = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let (left, right): (Vec<&str>, Vec<&str>) = (left.split(' ').collect(), right.split(' ').collect());
        if left.len() < 5 || right.len() < 3 || right[0] != "cgroup" {
            continue;
        }
        let mount_point = PathBuf::from(unescape(left[4]));
        if mount_point.parent() != Some(Path::new(HOST_CGROUP_ROOT)) {
            continue;
        }
        hierarchies.push(HostHierarchy {
            mount_point,
            root: PathBuf::from(unescape(left[3])),
            options: right[2].split(',').map(String::from).collect(),
        });
    }
    hierarchies
}

/// A mountinfo path with its octal escapes (`\040` for a space) undone.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            out.push(u8::from_str_radix(&field[i + 1..i + 4], 8).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The path of the process's cgroup in the hierarchy, from its /proc/PID/cgroup text: the
/// line whose controllers (or `name=`) are all among the hierarchy's superblock options.
fn cgroup_in(hierarchy: &HostHierarchy, proc_cgroup: &str) -> Option<PathBuf> {
    let options: HashSet<&str> = hierarchy.options.iter().map(String::as_str).collect();
    proc_cgroup.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let mut controllers = controllers.split(',').filter(|c| !c.is_empty()).peekable();
        controllers.peek()?;
        controllers.all(|c| options.contains(c)).then(|| PathBuf::from(path))
    })
}

/// Clones, on the host, the cgroup directory of process `init` in each v1 hierarchy
/// mounted under /sys/fs/cgroup, and gives each clone the per-mount attributes `set`
/// (every other per-mount attribute cleared, as runc's remount of the bind leaves them).
pub fn open_hierarchies(init: Pid, set: u64) -> Result<Vec<HierarchyTree>> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").context("cannot read /proc/self/mountinfo")?;
    let cgroup_file = format!("/proc/{init}/cgroup");
    let proc_cgroup = std::fs::read_to_string(&cgroup_file)
        .with_context(|| format!("cannot read the container's cgroups in {cgroup_file}"))?;
    let mut trees = Vec::new();
    for hierarchy in host_hierarchies(&mountinfo) {
        let shown = hierarchy.mount_point.display();
        let Some(path) = cgroup_in(&hierarchy, &proc_cgroup) else {
            bail!("the container's init has no cgroup in the hierarchy mounted at {shown} ({cgroup_file} has none)");
        };
        let relative = path.strip_prefix(&hierarchy.root).with_context(|| {
            format!(
                "the container's cgroup {} is outside the part of the hierarchy mounted at {shown} ({})",
                path.display(),
                hierarchy.root.display()
            )
        })?;
        let source = hierarchy.mount_point.join(relative);
        let name = hierarchy.mount_point.file_name().context("a cgroup hierarchy is mounted at /")?;
        let tree = crate::mount_options::clone_mount(
            libc::AT_FDCWD,
            &crate::mount_options::c_path(source.as_os_str())?,
            libc::AT_RECURSIVE,
        )
        .with_context(|| format!("cannot clone the container's cgroup directory {}", source.display()))?;
        crate::mount_options::set_bind_attributes(&tree, set)
            .with_context(|| format!("cannot set the mount flags of the clone of {}", source.display()))?;
        trees.push(HierarchyTree { name: name.to_string_lossy().into_owned(), tree });
    }
    Ok(trees)
}

/// Attaches the cloned hierarchies in the tmpfs libcontainer mounted at `destination`, from
/// inside the container's mount namespace, and links co-mounted controllers' names.
pub fn mount_inside(destination: &Path, trees: Vec<HierarchyTree>) -> Result<()> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    let shown = destination.display();
    let root = crate::mount_options::open_in_root(destination, libc::O_PATH | libc::O_DIRECTORY)
        .with_context(|| format!("cannot open {shown} in the container"))?;
    if crate::mount_options::fs_type(&root)? != crate::mount_options::TMPFS_MAGIC {
        bail!("the mount at {shown} is not the tmpfs libcontainer made for the cgroup mount");
    }
    let exists_ok = |result: nix::Result<()>| match result {
        Err(nix::errno::Errno::EEXIST) => Ok(()),
        other => other,
    };
    for hierarchy in &trees {
        let name = OsStr::new(&hierarchy.name);
        exists_ok(nix::sys::stat::mkdirat(Some(root.as_raw_fd()), name, Mode::from_bits_truncate(0o755)))
            .with_context(|| format!("cannot make {shown}/{}", hierarchy.name))?;
        let target = crate::mount_options::c_path(name)?;
        // SAFETY: a detached tree, an empty path, a directory descriptor and a name.
        crate::mount_options::cvt(unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                hierarchy.tree.as_raw_fd(),
                c"".as_ptr(),
                root.as_raw_fd(),
                target.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        })
        .with_context(|| {
            format!("cannot mount the container's {} cgroup at {shown}/{}", hierarchy.name, hierarchy.name)
        })?;
    }
    for hierarchy in trees.iter().filter(|h| h.name.contains(',')) {
        for controller in hierarchy.name.split(',') {
            exists_ok(nix::unistd::symlinkat(hierarchy.name.as_str(), Some(root.as_raw_fd()), controller))
                .with_context(|| format!("cannot link {shown}/{controller} to {}", hierarchy.name))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 /outer /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 23 0:39 / /mnt/other\\040place rw,relatime - cgroup cgroup rw,pids
";

    #[test]
    fn hierarchies_are_the_v1_mounts_under_sys_fs_cgroup() {
        let found = host_hierarchies(MOUNTINFO);
        let points: Vec<_> = found.iter().map(|h| h.mount_point.to_str().unwrap()).collect();
        assert_eq!(points, ["/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/systemd"]);
        assert_eq!(found[1].root, Path::new("/outer"));
        assert_eq!(unescape("/mnt/other\\040place"), "/mnt/other place");
    }

    #[test]
    fn the_process_cgroup_is_found_by_controllers() {
        let found = host_hierarchies(MOUNTINFO);
        let proc_cgroup = "9:name=systemd:/a\n4:memory:/outer/b\n2:cpu,cpuacct:/c\n0::/d\n";
        let paths: Vec<_> = found.iter().map(|h| cgroup_in(h, proc_cgroup)).collect();
        assert_eq!(paths, [Some(PathBuf::from("/c")), Some(PathBuf::from("/outer/b")), Some(PathBuf::from("/a"))]);
        assert_eq!(cgroup_in(&found[0], "0::/d\n4:memory:/x\n"), None);
    }
}
