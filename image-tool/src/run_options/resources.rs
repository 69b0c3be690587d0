//! The resource and security options: `--memory`, `--memory-swap`, `--cpus`, `--cpu-shares`,
//! `--pids-limit` (cgroup limits), `--cap-add`/`--cap-drop`, `--privileged`, `--read-only`
//! and `--device`, written into the runtime spec as `docker run` sets them.

use std::collections::HashSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use clap::Args;
use oci_spec::runtime::{
    Capabilities, Capability, LinuxCapabilities, LinuxCpuBuilder, LinuxDeviceBuilder, LinuxDeviceCgroupBuilder,
    LinuxDeviceType, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResources, Spec,
};

/// The smallest memory limit Docker accepts (its daemon refuses less).
const MIN_MEMORY: i64 = 6 << 20;
/// The CFS period `--cpus` is expressed in, in microseconds (Docker's).
const CPU_PERIOD: u64 = 100_000;

#[derive(Args, Debug, Clone, Default)]
pub struct ResourceOptions {
    /// Memory limit: a number with an optional unit b, k, m, g (binary: 1k = 1024), at least 6m
    #[arg(short = 'm', long, value_name = "BYTES", value_parser = parse_bytes, help_heading = "Resources and security")]
    pub memory: Option<i64>,
    /// Memory plus swap limit (same units; -1: unlimited swap); needs --memory and is at least it;
    /// default twice --memory where the kernel accounts swap
    #[arg(long = "memory-swap", value_name = "BYTES", value_parser = parse_swap, allow_negative_numbers = true, help_heading = "Resources and security")]
    pub memory_swap: Option<i64>,
    /// CPUs the container may use, as a decimal (CFS quota over a 100 ms period)
    #[arg(long, value_name = "N", value_parser = parse_cpus, help_heading = "Resources and security")]
    pub cpus: Option<f64>,
    /// Relative CPU weight (cgroup cpu.shares)
    #[arg(short = 'c', long = "cpu-shares", value_name = "N", help_heading = "Resources and security")]
    pub cpu_shares: Option<u64>,
    /// Most processes the container may have (0 or negative: unlimited)
    #[arg(
        long = "pids-limit",
        value_name = "N",
        allow_negative_numbers = true,
        help_heading = "Resources and security"
    )]
    pub pids_limit: Option<i64>,
    /// Add a capability (Docker's names, with or without CAP_, or ALL: every one berth-image's own bounding set holds); repeatable
    #[arg(long = "cap-add", value_name = "CAP", value_parser = CapName::from_str, help_heading = "Resources and security")]
    pub cap_add: Vec<CapName>,
    /// Drop a capability (Docker's names, with or without CAP_, or ALL); repeatable
    #[arg(long = "cap-drop", value_name = "CAP", value_parser = CapName::from_str, help_heading = "Resources and security")]
    pub cap_drop: Vec<CapName>,
    /// Every capability (that berth-image's own bounding set holds), every device allowed and
    /// the host's device nodes, no masked or read-only paths, /sys writable, no seccomp
    #[arg(long, help_heading = "Resources and security")]
    pub privileged: bool,
    /// Mount the root filesystem read-only
    #[arg(long = "read-only", help_heading = "Resources and security")]
    pub read_only: bool,
    /// Give the container a host device: HOST[:CONTAINER[:PERMS]] (PERMS of r, w, m; default rwm); repeatable
    #[arg(long = "device", value_name = "HOST[:CTR[:PERMS]]", value_parser = DeviceMapping::from_str, help_heading = "Resources and security")]
    pub devices: Vec<DeviceMapping>,
}

/// A capability named on the command line, or ALL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapName {
    All,
    One(Capability),
}

impl FromStr for CapName {
    type Err = anyhow::Error;
    fn from_str(text: &str) -> Result<CapName> {
        let upper = text.to_ascii_uppercase();
        if upper == "ALL" {
            return Ok(CapName::All);
        }
        let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
        match CAPABILITIES.iter().find(|(name, _)| *name == bare) {
            Some((name, _)) => Ok(CapName::One(Capability::from_str(name)?)),
            None => bail!("unknown capability {text:?}: give a name such as NET_ADMIN or CAP_NET_ADMIN, or ALL"),
        }
    }
}

/// `--device HOST[:CONTAINER[:PERMS]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceMapping {
    pub host: PathBuf,
    pub container: PathBuf,
    pub permissions: String,
}

impl FromStr for DeviceMapping {
    type Err = anyhow::Error;
    fn from_str(text: &str) -> Result<DeviceMapping> {
        let parts: Vec<&str> = text.split(':').collect();
        let is_permissions = |p: &str| !p.is_empty() && p.chars().all(|c| "rwm".contains(c));
        let (host, container, permissions) = match parts[..] {
            [host] => (host, host, "rwm"),
            // Docker: a second part made of r, w and m is the permissions.
            [host, second] if is_permissions(second) => (host, host, second),
            [host, container] => (host, container, "rwm"),
            [host, container, permissions] => (host, container, permissions),
            _ => bail!("bad device {text:?}: give HOST[:CONTAINER[:PERMS]]"),
        };
        if !host.starts_with('/') || !container.starts_with('/') {
            bail!("bad device {text:?}: both paths must be absolute");
        }
        if !is_permissions(permissions) {
            bail!("bad device {text:?}: permissions {permissions:?} must be made of r, w and m");
        }
        Ok(DeviceMapping { host: host.into(), container: container.into(), permissions: permissions.into() })
    }
}

/// A size as Docker takes it: a decimal number with an optional unit b, k, m, g, t or p
/// (binary multiples, any case, an optional trailing `b` or `ib`).
pub fn parse_bytes(text: &str) -> Result<i64> {
    let bad = || anyhow::anyhow!("invalid size {text:?}: give a number with an optional unit b, k, m or g (e.g. 512m)");
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let unit = unit.trim_start().to_ascii_lowercase();
    let unit = unit.strip_suffix("ib").or_else(|| unit.strip_suffix('b')).unwrap_or(&unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return Err(bad()),
    };
    let bytes = number * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes >= i64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as i64)
}

/// `--memory-swap`: a size, or -1 for unlimited swap.
fn parse_swap(text: &str) -> Result<i64> {
    if text == "-1" {
        return Ok(-1);
    }
    parse_bytes(text)
}

fn parse_cpus(text: &str) -> Result<f64> {
    let cpus: f64 = text.parse().map_err(|_| anyhow::anyhow!("invalid --cpus {text:?}: give a decimal such as 1.5"))?;
    if !cpus.is_finite() || cpus < 0.0 {
        bail!("invalid --cpus {text:?}: give a positive decimal such as 1.5");
    }
    Ok(cpus)
}

impl ResourceOptions {
    pub fn apply(&self, spec: &mut Spec) -> Result<()> {
        let mut linux = spec.linux().clone().unwrap_or_default();
        let mut resources = linux.resources().clone().unwrap_or_default();
        self.apply_limits(&mut resources)?;
        let mut rules = resources.devices().clone().unwrap_or_default();
        let mut devices = linux.devices().clone().unwrap_or_default();
        for mapping in &self.devices {
            let (device, rule) = device_node(mapping)?;
            devices.push(device);
            rules.push(rule);
        }
        if self.privileged {
            rules = vec![LinuxDeviceCgroupBuilder::default().allow(true).access("rwm").build()?];
            // Docker gives a privileged container the host's device nodes too.
            for device in host_devices(Path::new("/dev"))? {
                if !devices.iter().any(|d| d.path() == device.path()) {
                    devices.push(device);
                }
            }
            linux.set_masked_paths(Some(Vec::new()));
            linux.set_readonly_paths(Some(Vec::new()));
            linux.set_seccomp(None);
            // Docker mounts /sys (and the cgroup tree below it) writable for privileged containers.
            let mut mounts = spec.mounts().clone().unwrap_or_default();
            for mount in mounts.iter_mut().filter(|m| m.destination().starts_with("/sys")) {
                if let Some(options) = mount.options().clone() {
                    mount.set_options(Some(options.into_iter().filter(|o| o != "ro").collect()));
                }
            }
            spec.set_mounts(Some(mounts));
        }
        resources.set_devices(Some(rules));
        linux.set_resources(Some(resources));
        if !devices.is_empty() {
            linux.set_devices(Some(devices));
        }
        spec.set_linux(Some(linux));
        self.apply_capabilities(spec)?;
        if self.read_only {
            let mut root = spec.root().clone().unwrap_or_default();
            root.set_readonly(Some(true));
            spec.set_root(Some(root));
        }
        Ok(())
    }

    fn apply_limits(&self, resources: &mut LinuxResources) -> Result<()> {
        if let Some(swap) = self.memory_swap {
            let Some(memory) = self.memory else {
                bail!("--memory-swap needs --memory: it is the limit of memory and swap together");
            };
            if swap != -1 && swap < memory {
                bail!("--memory-swap ({swap} bytes) is below --memory ({memory} bytes): it counts memory and swap together, so give at least the memory limit, or -1 for unlimited swap");
            }
        }
        if let Some(memory) = self.memory {
            if memory < MIN_MEMORY {
                bail!("--memory {memory} bytes is below the smallest limit, 6m");
            }
            let mut limits = LinuxMemoryBuilder::default().limit(memory);
            match self.memory_swap {
                Some(swap) => limits = limits.swap(swap),
                // Docker: swap as much as memory when the kernel accounts swap.
                None if swap_accounted() => limits = limits.swap(memory.saturating_mul(2)),
                None => {}
            }
            resources.set_memory(Some(limits.build()?));
        }
        if self.cpus.is_some_and(|c| c > 0.0) || self.cpu_shares.is_some_and(|s| s > 0) {
            let mut cpu = LinuxCpuBuilder::default();
            if let Some(cpus) = self.cpus.filter(|c| *c > 0.0) {
                let available = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
                if cpus > available as f64 {
                    bail!("--cpus {cpus} is more than the {available} CPUs this host has");
                }
                let quota = (cpus * CPU_PERIOD as f64).round() as i64;
                if quota < 1000 {
                    bail!("--cpus {cpus} is below the smallest share, 0.01");
                }
                cpu = cpu.quota(quota).period(CPU_PERIOD);
            }
            if let Some(shares) = self.cpu_shares.filter(|s| *s > 0) {
                cpu = cpu.shares(shares);
            }
            resources.set_cpu(Some(cpu.build()?));
        }
        if let Some(limit) = self.pids_limit.filter(|l| *l != 0) {
            resources.set_pids(Some(LinuxPidsBuilder::default().limit(limit.max(-1)).build()?));
        }
        Ok(())
    }

    /// Docker's rule: privileged gets every capability; else ALL in --cap-add means every
    /// one but the dropped, ALL in --cap-drop means only the added, and otherwise the
    /// defaults less the dropped plus the added.
    fn apply_capabilities(&self, spec: &mut Spec) -> Result<()> {
        let mut process = spec.process().clone().unwrap_or_default();
        let defaults = process.capabilities().as_ref().and_then(|c| c.bounding().clone()).unwrap_or_default();
        let named = |list: &[CapName]| -> HashSet<Capability> {
            list.iter().filter_map(|c| if let CapName::One(cap) = c { Some(*cap) } else { None }).collect()
        };
        let (added, dropped) = (named(&self.cap_add), named(&self.cap_drop));
        let caps: Capabilities = if self.privileged {
            kernel_capabilities()?
        } else if self.cap_add.contains(&CapName::All) {
            kernel_capabilities()?.into_iter().filter(|c| !dropped.contains(c)).collect()
        } else if self.cap_drop.contains(&CapName::All) {
            added
        } else {
            defaults.into_iter().filter(|c| !dropped.contains(c)).chain(added).collect()
        };
        let mut capabilities = LinuxCapabilities::default();
        capabilities.set_bounding(Some(caps.clone()));
        capabilities.set_effective(Some(caps.clone()));
        capabilities.set_permitted(Some(caps));
        capabilities.set_inheritable(None);
        capabilities.set_ambient(None);
        process.set_capabilities(Some(capabilities));
        spec.set_process(Some(process));
        Ok(())
    }
}

/// Whether the host's memory cgroup accounts swap (memory.memsw on v1; v2 always does).
fn swap_accounted() -> bool {
    let v1 = std::path::Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes");
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers");
    v1.exists() || v2.exists()
}

/// Devices the runtime makes in every container's /dev itself; listing them again would clash.
const RUNTIME_DEVICES: &[&str] =
    &["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", "/dev/console", "/dev/ptmx"];
/// Directories below /dev whose nodes belong to the host's own mounts (ptys, shm, queues).
const HOST_ONLY_DIRS: &[&str] = &["/dev/pts", "/dev/shm", "/dev/mqueue", "/dev/fd", "/dev/hugepages"];

/// Every character and block device under `dir` (symlinks not followed), as nodes for a
/// privileged container at the same paths, less the runtime's own and the host-only ones.
fn host_devices(dir: &Path) -> Result<Vec<oci_spec::runtime::LinuxDevice>> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("cannot list {} for --privileged", dir.display()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            let kind = match meta.file_type() {
                t if t.is_dir() && !HOST_ONLY_DIRS.iter().any(|d| path == Path::new(d)) => {
                    stack.push(path);
                    continue;
                }
                t if t.is_char_device() => LinuxDeviceType::C,
                t if t.is_block_device() => LinuxDeviceType::B,
                _ => continue,
            };
            if RUNTIME_DEVICES.iter().any(|d| path == Path::new(d)) {
                continue;
            }
            found.push(
                LinuxDeviceBuilder::default()
                    .path(path)
                    .typ(kind)
                    .major(libc::major(meta.rdev()) as i64)
                    .minor(libc::minor(meta.rdev()) as i64)
                    .file_mode(meta.permissions().mode() & 0o7777)
                    .uid(meta.uid())
                    .gid(meta.gid())
                    .build()?,
            );
        }
    }
    found.sort_by(|a, b| a.path().cmp(b.path()));
    Ok(found)
}

/// The device node and the cgroup rule for `--device`, from the host device it names
/// (symlinks followed, as Docker does).
fn device_node(
    mapping: &DeviceMapping,
) -> Result<(oci_spec::runtime::LinuxDevice, oci_spec::runtime::LinuxDeviceCgroup)> {
    let host = mapping.host.display();
    let meta = std::fs::metadata(&mapping.host).with_context(|| format!("--device {host}: cannot stat it"))?;
    let kind = match meta.file_type() {
        t if t.is_char_device() => LinuxDeviceType::C,
        t if t.is_block_device() => LinuxDeviceType::B,
        _ => bail!("--device {host}: not a character or block device"),
    };
    let (major, minor) = (libc::major(meta.rdev()) as i64, libc::minor(meta.rdev()) as i64);
    let device = LinuxDeviceBuilder::default()
        .path(mapping.container.clone())
        .typ(kind)
        .major(major)
        .minor(minor)
        .file_mode(meta.permissions().mode() & 0o7777)
        .uid(meta.uid())
        .gid(meta.gid())
        .build()?;
    let rule = LinuxDeviceCgroupBuilder::default()
        .allow(true)
        .typ(kind)
        .major(major)
        .minor(minor)
        .access(mapping.permissions.clone())
        .build()?;
    Ok((device, rule))
}

/// Docker's ALL: every capability this kernel knows (up to /proc/sys/kernel/cap_last_cap),
/// less those outside berth-image's own bounding set (as podman does): a runtime run from
/// the same place could not grant them, and would fail to create the container.
fn kernel_capabilities() -> Result<Capabilities> {
    let last: usize = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(CAPABILITIES.len() - 1);
    let bounding = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("CapBnd:"))?;
            u64::from_str_radix(line.split_whitespace().nth(1)?, 16).ok()
        })
        .unwrap_or(u64::MAX);
    CAPABILITIES
        .iter()
        .filter(|(_, number)| *number <= last && bounding & (1 << number) != 0)
        .map(|(name, _)| Capability::from_str(name).with_context(|| format!("capability {name}")))
        .collect()
}

/// Linux's capabilities by Docker's name (without CAP_) and number.
const CAPABILITIES: &[(&str, usize)] = &[
    ("CHOWN", 0),
    ("DAC_OVERRIDE", 1),
    ("DAC_READ_SEARCH", 2),
    ("FOWNER", 3),
    ("FSETID", 4),
    ("KILL", 5),
    ("SETGID", 6),
    ("SETUID", 7),
    ("SETPCAP", 8),
    ("LINUX_IMMUTABLE", 9),
    ("NET_BIND_SERVICE", 10),
    ("NET_BROADCAST", 11),
    ("NET_ADMIN", 12),
    ("NET_RAW", 13),
    ("IPC_LOCK", 14),
    ("IPC_OWNER", 15),
    ("SYS_MODULE", 16),
    ("SYS_RAWIO", 17),
    ("SYS_CHROOT", 18),
    ("SYS_PTRACE", 19),
    ("SYS_PACCT", 20),
    ("SYS_ADMIN", 21),
    ("SYS_BOOT", 22),
    ("SYS_NICE", 23),
    ("SYS_RESOURCE", 24),
    ("SYS_TIME", 25),
    ("SYS_TTY_CONFIG", 26),
    ("MKNOD", 27),
    ("LEASE", 28),
    ("AUDIT_WRITE", 29),
    ("AUDIT_CONTROL", 30),
    ("SETFCAP", 31),
    ("MAC_OVERRIDE", 32),
    ("MAC_ADMIN", 33),
    ("SYSLOG", 34),
    ("WAKE_ALARM", 35),
    ("BLOCK_SUSPEND", 36),
    ("AUDIT_READ", 37),
    ("PERFMON", 38),
    ("BPF", 39),
    ("CHECKPOINT_RESTORE", 40),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_docker_units() {
        assert_eq!(parse_bytes("512").unwrap(), 512);
        assert_eq!(parse_bytes("4k").unwrap(), 4096);
        assert_eq!(parse_bytes("64m").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("2GB").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("10b").unwrap(), 10);
        for bad in ["", "m", "12x", "1.2.3m", "-5m", "5 mm"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_swap("-1").unwrap(), -1);
    }

    #[test]
    fn capability_names_and_devices_parse_as_docker_takes_them() {
        assert_eq!("net_admin".parse::<CapName>().unwrap(), CapName::One(Capability::NetAdmin));
        assert_eq!("CAP_SYS_TIME".parse::<CapName>().unwrap(), CapName::One(Capability::SysTime));
        assert_eq!("all".parse::<CapName>().unwrap(), CapName::All);
        assert!("NET_NOPE".parse::<CapName>().is_err());
        let d = |t: &str| t.parse::<DeviceMapping>();
        let m = d("/dev/null").unwrap();
        assert_eq!((m.container.to_str().unwrap(), m.permissions.as_str()), ("/dev/null", "rwm"));
        let m = d("/dev/null:r").unwrap();
        assert_eq!((m.container.to_str().unwrap(), m.permissions.as_str()), ("/dev/null", "r"));
        let m = d("/dev/null:/dev/n:rw").unwrap();
        assert_eq!((m.container.to_str().unwrap(), m.permissions.as_str()), ("/dev/n", "rw"));
        for bad in ["dev/null", "/dev/null:rel", "/dev/null:/dev/n:rx", "/a:/b:r:w", ""] {
            assert!(d(bad).is_err(), "{bad}");
        }
    }
}
