//! `update`: changes a running container's resource limits, from a LinuxResources JSON
//! (a file, or `-` for stdin) or from runc's single-value flags.

use std::io::Read;

use anyhow::{bail, Context, Result};
use libcgroups::common::{CgroupManager, ControllerOpt};
use oci_spec::runtime::{
    LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder,
};

use crate::cli::UpdateArgs;
use crate::store::Store;

pub fn update(store: &Store, args: &UpdateArgs) -> Result<()> {
    let (container, _) = store.load(&args.id)?;
    if container.status() == libcontainer::container::ContainerStatus::Stopped {
        bail!("container not running: cannot update the stopped container {}", args.id);
    }
    let resources = match &args.resources {
        Some(path) => read_resources(path)?,
        None => resources_from_flags(args)?,
    };
    check_host_support(&resources)?;
    if args.l3_cache_schema.is_some() || args.mem_bw_schema.is_some() {
        bail!("--l3-cache-schema and --mem-bw-schema need Intel RDT (resctrl), which this host does not offer");
    }
    crate::cgroups::manager(&container)?
        .apply(&ControllerOpt {
            resources: &resources,
            disable_oom_killer: oom_killer_disabled(&resources, container.bundle()),
            oom_score_adj: None,
            freezer_state: None,
        })
        .with_context(|| format!("cannot update the resources of container {}", args.id))
}

/// Refuses settings this host's cgroups cannot hold, instead of reporting a silent no-op.
fn check_host_support(resources: &LinuxResources) -> Result<()> {
    let weight = resources.block_io().as_ref().is_some_and(|b| b.weight().is_some() || b.leaf_weight().is_some());
    if weight && !crate::cgroups::unified_host() {
        let blkio = std::path::Path::new("/sys/fs/cgroup/blkio");
        if !blkio.join("blkio.weight").exists() && !blkio.join("blkio.bfq.weight").exists() {
            bail!("a blkio weight needs a block scheduler with weights (CFQ or BFQ), and this host's blkio cgroup has no weight file");
        }
    }
    let kernel = resources.memory().as_ref().is_some_and(|m| m.kernel().is_some() || m.kernel_tcp().is_some());
    if kernel {
        // As runc does: the kernel has deprecated these limits and may ignore them.
        eprintln!("warning: kernel memory limits are deprecated; this kernel may ignore them");
    }
    Ok(())
}

fn read_resources(path: &std::path::Path) -> Result<LinuxResources> {
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text).context("cannot read resources from stdin")?;
    } else {
        text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read resources file {}", path.display()))?;
    }
    serde_json::from_str(&text).with_context(|| format!("invalid resources JSON in {}", path.display()))
}

fn resources_from_flags(args: &UpdateArgs) -> Result<LinuxResources> {
    /// Sets a builder field from a flag that was given, and notes that one was.
    macro_rules! set {
        ($builder:ident, $given:ident, $flag:expr, $setter:ident) => {
            if let Some(value) = $flag.clone() {
                $builder = $builder.$setter(value);
                $given = true;
            }
        };
    }
    let mut resources = LinuxResourcesBuilder::default();
    let (mut cpu, mut cpu_given) = (LinuxCpuBuilder::default(), false);
    set!(cpu, cpu_given, args.cpu_period, period);
    set!(cpu, cpu_given, args.cpu_quota, quota);
    set!(cpu, cpu_given, args.cpu_rt_period, realtime_period);
    set!(cpu, cpu_given, args.cpu_rt_runtime, realtime_runtime);
    set!(cpu, cpu_given, args.cpu_share, shares);
    set!(cpu, cpu_given, args.cpuset_cpus, cpus);
    set!(cpu, cpu_given, args.cpuset_mems, mems);
    if cpu_given {
        resources = resources.cpu(cpu.build()?);
    }
    let (mut memory, mut memory_given) = (LinuxMemoryBuilder::default(), false);
    set!(memory, memory_given, args.memory, limit);
    set!(memory, memory_given, args.memory_reservation, reservation);
    set!(memory, memory_given, args.memory_swap, swap);
    set!(memory, memory_given, args.kernel_memory, kernel);
    set!(memory, memory_given, args.kernel_memory_tcp, kernel_tcp);
    if memory_given {
        resources = resources.memory(memory.build()?);
    }
    if let Some(limit) = args.pids_limit {
        resources = resources.pids(LinuxPidsBuilder::default().limit(limit).build()?);
    }
    if let Some(weight) = args.blkio_weight {
        resources = resources.block_io(LinuxBlockIoBuilder::default().weight(weight).build()?);
    }
    Ok(resources.build()?)
}

/// The OOM killer switch after an update: as the update says, else as the container's
/// config.json set it (libcgroups rewrites the switch with every memory update).
fn oom_killer_disabled(resources: &LinuxResources, bundle: &std::path::Path) -> bool {
    match resources.memory().as_ref().and_then(|m| m.disable_oom_killer()) {
        Some(disabled) => disabled,
        None => crate::bundle::load_spec(bundle)
            .ok()
            .and_then(|spec| spec.linux().as_ref().and_then(|l| l.resources().clone()))
            .is_some_and(|r| crate::cgroups::disables_oom_killer(&r)),
    }
}
