//! What the shim holds for each container besides process state (which the process table
//! owns): its bundle and runtime client, and each process's stdio and exec process file.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::runtime::Runtime;
use crate::stdio::{ProcessIo, StdioSpec};

/// One process's stdio: the container's init (empty exec id) or an exec.
pub struct Process {
    pub stdio: StdioSpec,
    pub io: ProcessIo,
    /// For execs: the process JSON file written at Exec, used at Start.
    pub spec_file: Option<PathBuf>,
}

impl Process {
    pub fn new(stdio: StdioSpec, spec_file: Option<PathBuf>) -> Process {
        Process { stdio, io: ProcessIo::default(), spec_file }
    }
}

/// A container the shim runs.
pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub runtime: Box<dyn Runtime>,
    pub init: Process,
    pub execs: HashMap<String, Process>,
    /// Rootfs mounts made at Create, undone at Delete.
    pub mounted_rootfs: bool,
    /// The container's cgroup path, for its OOM kill count.
    pub cgroup_path: Option<String>,
}

impl Container {
    pub fn process(&self, exec_id: &str) -> Option<&Process> {
        if exec_id.is_empty() {
            Some(&self.init)
        } else {
            self.execs.get(exec_id)
        }
    }

    pub fn process_mut(&mut self, exec_id: &str) -> Option<&mut Process> {
        if exec_id.is_empty() {
            Some(&mut self.init)
        } else {
            self.execs.get_mut(exec_id)
        }
    }

    /// OOM kills in the container's memory cgroup (v1 memory.oom_control, v2 memory.events).
    pub fn oom_kills(&self) -> u64 {
        let Some(path) = &self.cgroup_path else { return 0 };
        let relative = path.trim_start_matches('/');
        ["/sys/fs/cgroup/memory/{}/memory.oom_control", "/sys/fs/cgroup/{}/memory.events"]
            .iter()
            .filter_map(|pattern| std::fs::read_to_string(pattern.replace("{}", relative)).ok())
            .flat_map(|text| {
                text.lines().filter_map(|l| l.strip_prefix("oom_kill ")?.trim().parse::<u64>().ok()).collect::<Vec<_>>()
            })
            .max()
            .unwrap_or(0)
    }
}
