//! The container's resource usage as containerd reads it: berth's runc-shaped stats (the
//! `data` of `events --stats`) turned into containerd's cgroups v1 `Metrics`.

use containerd_shim::protos::cgroups::metrics::{CPUStat, CPUUsage, MemoryEntry, MemoryStat, Metrics, PidsStat};

/// The type URL containerd decodes a Stats reply's metrics by.
pub const METRICS_TYPE: &str = "io.containerd.cgroups.v1.Metrics";

/// berth's runc-shaped stats as containerd's cgroups v1 Metrics; a missing number reads 0.
pub fn metrics_from_stats(data: &serde_json::Value) -> Metrics {
    let number = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let entry = |v: &serde_json::Value| MemoryEntry {
        limit: number(&v["limit"]),
        usage: number(&v["usage"]),
        max: number(&v["max"]),
        failcnt: number(&v["failcnt"]),
        ..Default::default()
    };
    let usage = &data["cpu"]["usage"];
    Metrics {
        pids: Some(PidsStat {
            current: number(&data["pids"]["current"]),
            limit: number(&data["pids"]["limit"]),
            ..Default::default()
        })
        .into(),
        cpu: Some(CPUStat {
            usage: Some(CPUUsage {
                total: number(&usage["total"]),
                kernel: number(&usage["kernel"]),
                user: number(&usage["user"]),
                per_cpu: usage["percpu"].as_array().map(|a| a.iter().map(number).collect()).unwrap_or_default(),
                ..Default::default()
            })
            .into(),
            ..Default::default()
        })
        .into(),
        memory: Some(MemoryStat {
            cache: number(&data["memory"]["cache"]),
            usage: Some(entry(&data["memory"]["usage"])).into(),
            swap: Some(entry(&data["memory"]["swap"])).into(),
            kernel: Some(entry(&data["memory"]["kernel"])).into(),
            kernel_tcp: Some(entry(&data["memory"]["kernelTCP"])).into(),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_stats_fill_containerds_metrics() {
        let data = serde_json::json!({
            "pids": {"current": 3, "limit": 100},
            "cpu": {"usage": {"total": 900, "kernel": 200, "user": 700, "percpu": [400, 500]}},
            "memory": {"cache": 4096, "usage": {"limit": 1048576, "usage": 65536, "max": 70000, "failcnt": 1}, "kernelTCP": {"usage": 12}}
        });
        let metrics = metrics_from_stats(&data);
        assert_eq!((metrics.pids.current, metrics.pids.limit), (3, 100));
        assert_eq!((metrics.cpu.usage.total, metrics.cpu.usage.kernel, metrics.cpu.usage.user), (900, 200, 700));
        assert_eq!(metrics.cpu.usage.per_cpu, vec![400, 500]);
        assert_eq!(metrics.memory.cache, 4096);
        assert_eq!(
            (
                metrics.memory.usage.limit,
                metrics.memory.usage.usage,
                metrics.memory.usage.max,
                metrics.memory.usage.failcnt
            ),
            (1048576, 65536, 70000, 1)
        );
        assert_eq!(metrics.memory.kernel_tcp.usage, 12);
        assert_eq!(metrics.memory.swap.usage, 0, "a section berth left out reads 0");
    }
}
