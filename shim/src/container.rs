//! What the shim knows of its containers: each one's bundle and runtime, and its processes
//! (the init and the execs) with pid, status, exit and stdio.

use std::collections::HashMap;
use std::path::PathBuf;

use containerd_shim::api::Status;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;

use crate::runtime::Runtime;
use crate::stdio::{ProcessIo, StdioSpec};

/// One process: the container's init (empty exec id) or an exec.
pub struct Process {
    pub exec_id: String,
    pub pid: i32,
    pub status: Status,
    pub exit_code: u32,
    pub exited_at: Option<Timestamp>,
    pub stdio: StdioSpec,
    pub io: ProcessIo,
    /// For execs: the process JSON file written at Exec, used at Start.
    pub spec_file: Option<PathBuf>,
    /// Whether its Start (or ExecStarted) event went out, so Exit can follow it.
    pub started_event_sent: bool,
    /// An exit recorded but held back until its Start event or the execs' exits are out.
    pub exit_event_pending: bool,
}

impl Process {
    pub fn new(exec_id: &str, stdio: StdioSpec) -> Process {
        Process {
            exec_id: exec_id.to_string(),
            pid: 0,
            status: Status::CREATED,
            exit_code: 0,
            exited_at: None,
            stdio,
            io: ProcessIo::default(),
            spec_file: None,
            started_event_sent: false,
            exit_event_pending: false,
        }
    }

    pub fn exited(&self) -> bool {
        self.status == Status::STOPPED
    }
}

/// A container the shim runs.
pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub runtime: Runtime,
    pub init: Process,
    pub execs: HashMap<String, Process>,
    /// Rootfs mounts made at Create, undone at Delete.
    pub mounted_rootfs: bool,
    /// The container's cgroup path, for its OOM kill count.
    pub cgroup_path: Option<String>,
}

impl Container {
    pub fn log(&self) -> PathBuf {
        self.bundle.join("log.json")
    }

    pub fn process(&self, exec_id: &str) -> Option<&Process> {
        if exec_id.is_empty() { Some(&self.init) } else { self.execs.get(exec_id) }
    }

    /// OOM kills in the container's memory cgroup (v1 memory.oom_control, v2 memory.events).
    pub fn oom_kills(&self) -> u64 {
        let Some(path) = &self.cgroup_path else { return 0 };
        let relative = path.trim_start_matches('/');
        ["/sys/fs/cgroup/memory/{}/memory.oom_control", "/sys/fs/cgroup/{}/memory.events"]
            .iter()
            .filter_map(|pattern| std::fs::read_to_string(pattern.replace("{}", relative)).ok())
            .flat_map(|text| text.lines().filter_map(|l| l.strip_prefix("oom_kill ")?.trim().parse::<u64>().ok()).collect::<Vec<_>>())
            .max()
            .unwrap_or(0)
    }

    pub fn process_mut(&mut self, exec_id: &str) -> Option<&mut Process> {
        if exec_id.is_empty() { Some(&mut self.init) } else { self.execs.get_mut(exec_id) }
    }
}

/// Exits the reaper saw for pids no process claims yet (an exec that ends before its
/// Start returned); claimed when the pid is learned.
#[derive(Default)]
pub struct UnclaimedExits(pub HashMap<i32, (i32, Timestamp)>);
