//! `events`: a container's resource usage in runc's event shape
//! `{"type":"stats","id":...,"data":{cpu,memory,pids,blkio,hugetlb}}`, once or every interval.

use std::io::Write;

use anyhow::{bail, Context, Result};
use libcgroups::common::CgroupManager;
use libcgroups::stats::{BlkioDeviceStat, MemoryData, Stats};
use libcontainer::container::ContainerStatus;
use serde_json::{json, Value};

use crate::cli::EventsArgs;
use crate::store::Store;

pub fn events(store: &Store, args: &EventsArgs) -> Result<()> {
    let (container, _) = store.load(&args.id)?;
    if container.status() == ContainerStatus::Stopped {
        bail!("container not running: {}", args.id);
    }
    let manager = crate::cgroups::manager(&container)?;
    let mut out = std::io::stdout().lock();
    loop {
        let stats =
            manager.stats().with_context(|| format!("cannot read the cgroup statistics of container {}", args.id))?;
        let event = json!({"type": "stats", "id": args.id, "data": runc_stats(&stats)});
        if writeln!(out, "{event}").and_then(|_| out.flush()).is_err() {
            return Ok(()); // the reader went away
        }
        if args.stats {
            return Ok(());
        }
        std::thread::sleep(args.interval);
        // The stream ends with the container, as runc's does.
        match store.load(&args.id) {
            Ok((c, _)) if c.status() != ContainerStatus::Stopped => {}
            _ => return Ok(()),
        }
    }
}

/// libcgroups' statistics in the field names of runc's `types.Stats`.
fn runc_stats(stats: &Stats) -> Value {
    let memory_entry = |data: &MemoryData| json!({"limit": data.limit, "usage": data.usage, "max": data.max_usage, "failcnt": data.fail_count});
    let blkio_entries = |entries: &[BlkioDeviceStat]| -> Vec<Value> {
        entries
            .iter()
            .map(|e| json!({"major": e.major, "minor": e.minor, "op": e.op_type.clone().unwrap_or_default(), "value": e.value}))
            .collect()
    };
    let hugetlb: serde_json::Map<String, Value> = stats
        .hugetlb
        .iter()
        .map(|(size, h)| (size.clone(), json!({"usage": h.usage, "max": h.max_usage, "failcnt": h.fail_count})))
        .collect();
    json!({
        "cpu": {
            "usage": {
                "total": stats.cpu.usage.usage_total,
                "percpu": stats.cpu.usage.per_core_usage_total,
                "percpu_kernel": stats.cpu.usage.per_core_usage_kernel,
                "percpu_user": stats.cpu.usage.per_core_usage_user,
                "kernel": stats.cpu.usage.usage_kernel,
                "user": stats.cpu.usage.usage_user
            },
            "throttling": {
                "periods": stats.cpu.throttling.periods,
                "throttledPeriods": stats.cpu.throttling.throttled_periods,
                "throttledTime": stats.cpu.throttling.throttled_time
            }
        },
        "memory": {
            "cache": stats.memory.cache,
            "usage": memory_entry(&stats.memory.memory),
            "swap": memory_entry(&stats.memory.memswap),
            "kernel": memory_entry(&stats.memory.kernel),
            "kernelTCP": memory_entry(&stats.memory.kernel_tcp),
            "raw": stats.memory.stats
        },
        "pids": {"current": stats.pids.current, "limit": stats.pids.limit},
        "blkio": {
            "ioServiceBytesRecursive": blkio_entries(&stats.blkio.service_bytes),
            "ioServicedRecursive": blkio_entries(&stats.blkio.serviced),
            "ioQueuedRecursive": blkio_entries(&stats.blkio.queued),
            "ioServiceTimeRecursive": blkio_entries(&stats.blkio.service_time),
            "ioWaitTimeRecursive": blkio_entries(&stats.blkio.wait_time),
            "ioMergedRecursive": blkio_entries(&stats.blkio.merged),
            "ioTimeRecursive": blkio_entries(&stats.blkio.time),
            "sectorsRecursive": blkio_entries(&stats.blkio.sectors)
        },
        "hugetlb": hugetlb
    })
}
