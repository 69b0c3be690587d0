//! `update`: changes a running container's resource limits, from a LinuxResources JSON
//! (a file, or `-` for stdin) or from runc's single-value flags.

use std::io::Read;

use anyhow::{bail, Context, Result};
use libcgroups::common::{CgroupManager, ControllerOpt};
use oci_spec::runtime::{
    LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResources,
    LinuxResourcesBuilder,
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
    if args.l3_cache_schema.is_some() || args.mem_bw_schema.is_some() {
        bail!("--l3-cache-schema and --mem-bw-schema need Intel RDT (resctrl), which this host does not offer");
    }
    crate::cgroups::manager(&container)?
        .apply(&ControllerOpt { resources: &resources, disable_oom_killer: false, oom_score_adj: None, freezer_state: None })
        .with_context(|| format!("cannot update the resources of container {}", args.id))
}

fn read_resources(path: &std::path::Path) -> Result<LinuxResources> {
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text).context("cannot read resources from stdin")?;
    } else {
        text = std::fs::read_to_string(path).with_context(|| format!("cannot read resources file {}", path.display()))?;
    }
    serde_json::from_str(&text).with_context(|| format!("invalid resources JSON in {}", path.display()))
}

fn resources_from_flags(args: &UpdateArgs) -> Result<LinuxResources> {
    let mut resources = LinuxResourcesBuilder::default();
    let mut cpu = LinuxCpuBuilder::default();
    let mut cpu_set = false;
    macro_rules! cpu_field {
        ($flag:expr, $setter:ident) => {
            if let Some(value) = $flag.clone() {
                cpu = cpu.$setter(value);
                cpu_set = true;
            }
        };
    }
    cpu_field!(args.cpu_period, period);
    cpu_field!(args.cpu_quota, quota);
    cpu_field!(args.cpu_rt_period, realtime_period);
    cpu_field!(args.cpu_rt_runtime, realtime_runtime);
    cpu_field!(args.cpu_share, shares);
    cpu_field!(args.cpuset_cpus, cpus);
    cpu_field!(args.cpuset_mems, mems);
    if cpu_set {
        resources = resources.cpu(cpu.build()?);
    }
    let mut memory = LinuxMemoryBuilder::default();
    let mut memory_set = false;
    macro_rules! memory_field {
        ($flag:expr, $setter:ident) => {
            if let Some(value) = $flag {
                memory = memory.$setter(value);
                memory_set = true;
            }
        };
    }
    memory_field!(args.memory, limit);
    memory_field!(args.memory_reservation, reservation);
    memory_field!(args.memory_swap, swap);
    memory_field!(args.kernel_memory, kernel);
    memory_field!(args.kernel_memory_tcp, kernel_tcp);
    if memory_set {
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
