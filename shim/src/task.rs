//! The task service containerd calls (task API v2): each method maps onto a berth
//! command, tracks process state, and publishes events in containerd's order. The serving
//! loop calls it on one thread and feeds it the exits it reaps.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::cell::{Cell, RefCell, RefMut};
use std::time::{Duration, Instant};

use containerd_shim::api::*;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::{Message, MessageField};
use containerd_shim::protos::api::ProcessInfo;
use containerd_shim::protos::ttrpc::{self, Code};
use containerd_shim::TtrpcResult;

use crate::container::{Container, Process, UnclaimedExits};
use crate::events::Events;
use crate::metrics::{metrics_from_stats, METRICS_TYPE};
use crate::rootfs;
use crate::runtime::{CallIo, Runtime};
use crate::stdio::{self, ConsoleSocket, StdioSpec};

/// The type URL containerd gives runc's shim options.
const RUNC_OPTIONS_TYPE: &str = "containerd.runc.v1.Options";

/// How long an unclaimed exit is kept for an exec whose pid is not known yet.
const UNCLAIMED_TTL: Duration = Duration::from_secs(60);

/// The task service: the containers, exits held for pids not known yet, and the event sender.
pub struct TaskService {
    containers: RefCell<HashMap<String, Container>>,
    unclaimed: RefCell<(UnclaimedExits, Vec<(Instant, i32)>)>,
    events: Events,
    namespace: String,
    shutdown_requested: Cell<bool>,
}

fn error(code: Code, message: impl ToString) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, message))
}

fn now() -> Timestamp {
    containerd_shim::util::timestamp().unwrap_or_default()
}

impl TaskService {
    pub fn new(events: Events, namespace: &str) -> TaskService {
        TaskService {
            containers: RefCell::new(HashMap::new()),
            unclaimed: RefCell::new((UnclaimedExits::default(), Vec::new())),
            events,
            namespace: namespace.to_string(),
            shutdown_requested: Cell::new(false),
        }
    }

    /// Every open stdin forward: (container id, exec id), descriptor and poll events.
    pub fn stdin_interests(&self) -> Vec<((String, String), std::os::fd::RawFd, libc::c_short)> {
        let containers = self.containers.borrow();
        let mut out = Vec::new();
        for c in containers.values() {
            for p in std::iter::once(&c.init).chain(c.execs.values()) {
                if let Some(stdin) = &p.io.stdin {
                    let (fd, events) = stdin.interest();
                    out.push(((c.id.clone(), p.exec_id.clone()), fd, events));
                }
            }
        }
        out
    }

    /// Forwards stdin the loop found ready; a finished one is closed (the process reads EOF).
    pub fn pump_stdin(&self, (id, exec_id): &(String, String)) {
        let mut containers = self.lock();
        let Some(process) = containers.get_mut(id).and_then(|c| c.process_mut(exec_id)) else { return };
        if let Some(stdin) = process.io.stdin.as_mut() {
            if !stdin.pump() {
                process.io.stdin = None;
            }
        }
    }

    /// Whether containerd asked the shim to exit (Shutdown with no container left).
    pub fn shutdown_requested(&self) -> bool {
        self.shutdown_requested.get()
    }

    fn lock(&self) -> RefMut<'_, HashMap<String, Container>> {
        self.containers.borrow_mut()
    }

    /// Records a reaped pid's exit on its process and publishes what may now go out.
    pub fn record_exit(&self, pid: i32, code: i32) {
        let at = now();
        let mut containers = self.lock();
        let owner = containers.iter().find_map(|(id, c)| {
            if c.init.pid == pid && !c.init.exited() {
                return Some((id.clone(), String::new()));
            }
            c.execs.values().find(|p| p.pid == pid && !p.exited()).map(|p| (id.clone(), p.exec_id.clone()))
        });
        let Some((id, exec_id)) = owner else {
            drop(containers);
            let mut unclaimed = self.unclaimed.borrow_mut();
            let (exits, order) = &mut *unclaimed;
            order.retain(|(when, old)| when.elapsed() < UNCLAIMED_TTL || exits.0.remove(old).is_none() && false);
            exits.0.insert(pid, (code, at));
            order.push((Instant::now(), pid));
            return;
        };
        let container = containers.get_mut(&id).unwrap();
        let process = container.process_mut(&exec_id).unwrap();
        process.status = Status::STOPPED;
        process.exit_code = code as u32;
        process.exited_at = Some(at);
        process.exit_event_pending = true;
        self.flush_exit_events(container);
    }

    /// Publishes pending exits whose order allows it: a process's Start before its Exit,
    /// and the init's Exit after every exec's.
    fn flush_exit_events(&self, container: &mut Container) {
        for exec in container.execs.values_mut() {
            if exec.exit_event_pending && exec.started_event_sent {
                exec.io.finish();
                self.events.exit(&container.id, &exec.exec_id, exec.pid, exec.exit_code, exec.exited_at.as_ref().unwrap());
                exec.exit_event_pending = false;
            }
        }
        let execs_done = container.execs.values().all(|e| !e.started_event_sent || (e.exited() && !e.exit_event_pending));
        let oom_kills = if container.init.exit_event_pending { container.oom_kills() } else { 0 };
        let init = &mut container.init;
        if init.exit_event_pending && init.started_event_sent && execs_done {
            // An OOM kill is reported before the exit it caused.
            if oom_kills > 0 {
                self.events.oom(&container.id);
            }
            init.io.finish();
            self.events.exit(&container.id, &container.id, init.pid, init.exit_code, init.exited_at.as_ref().unwrap());
            init.exit_event_pending = false;
        }
    }

    /// Takes an exit the reaper saw before the pid was known.
    fn claim_exit(&self, pid: i32) -> Option<(i32, Timestamp)> {
        self.unclaimed.borrow_mut().0 .0.remove(&pid)
    }

    fn container<'a>(containers: &'a mut HashMap<String, Container>, id: &str) -> TtrpcResult<&'a mut Container> {
        containers.get_mut(id).ok_or_else(|| error(Code::NOT_FOUND, format!("container {id} does not exist in this shim")))
    }
}

/// containerd's runc options (BinaryName, Root, SystemdCgroup) when their type is runc's.
fn runtime_options(options: &MessageField<Any>, namespace: &str) -> Runtime {
    let parsed = options
        .as_ref()
        .filter(|any| any.type_url.ends_with(RUNC_OPTIONS_TYPE))
        .and_then(|any| Options::parse_from_bytes(&any.value).ok());
    match parsed {
        Some(o) => Runtime::new(&o.binary_name, &o.root, namespace, o.systemd_cgroup),
        None => Runtime::new("", "", namespace, false),
    }
}

/// `linux.cgroupsPath` of the bundle's config.json.
fn cgroup_path_of(bundle: &Path) -> Option<String> {
    let text = std::fs::read_to_string(bundle.join("config.json")).ok()?;
    let spec: serde_json::Value = serde_json::from_str(&text).ok()?;
    spec["linux"]["cgroupsPath"].as_str().map(String::from)
}

fn read_pid(path: &Path) -> TtrpcResult<i32> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .ok_or_else(|| error(Code::INTERNAL, format!("berth wrote no pid to {}", path.display())))
}

/// The task API's methods, one per request containerd sends.
impl TaskService {
    pub fn create(&self, req: CreateTaskRequest) -> TtrpcResult<CreateTaskResponse> {
        let bundle = PathBuf::from(&req.bundle);
        let runtime = runtime_options(&req.options, &self.namespace);
        let stdio = StdioSpec { stdin: req.stdin.clone(), stdout: req.stdout.clone(), stderr: req.stderr.clone(), terminal: req.terminal };
        let mounted = rootfs::mount_bundle_rootfs(&bundle, &req.rootfs).map_err(|e| error(Code::INTERNAL, e))?;
        let mut container = Container {
            id: req.id.clone(),
            bundle: bundle.clone(),
            runtime,
            init: Process::new("", stdio.clone()),
            execs: HashMap::new(),
            mounted_rootfs: mounted,
            cgroup_path: cgroup_path_of(&bundle),
        };
        let pid_file = bundle.join("init.pid");
        let created = self.start_process(&mut container, "", &pid_file, |io, console| {
            let mut args = vec!["create".to_string(), "--bundle".into(), req.bundle.clone(), "--pid-file".into(), pid_file.display().to_string()];
            if let Some(socket) = console {
                args.extend(["--console-socket".to_string(), socket.display().to_string()]);
            }
            args.push(req.id.clone());
            (args, io)
        });
        if let Err(e) = created {
            if mounted {
                rootfs::unmount_bundle_rootfs(&bundle);
            }
            return Err(e);
        }
        let pid = container.init.pid;
        self.events.create(&req.id, &req.bundle, &stdio, pid);
        self.lock().insert(req.id.clone(), container);
        Ok(CreateTaskResponse { pid: pid as u32, ..Default::default() })
    }

    pub fn start(&self, req: StartRequest) -> TtrpcResult<StartResponse> {
        let mut containers = self.lock();
        let container = TaskService::container(&mut containers, &req.id)?;
        let pid = if req.exec_id.is_empty() {
            let log = container.log();
            container.runtime.call(&log, &["start", &req.id], None).map_err(|e| error(Code::INTERNAL, e))?;
            container.init.status = Status::RUNNING;
            self.events.start(&req.id, container.init.pid);
            container.init.started_event_sent = true;
            container.init.pid
        } else {
            let exec = container.execs.get(&req.exec_id).ok_or_else(|| error(Code::NOT_FOUND, format!("exec {} does not exist", req.exec_id)))?;
            let spec_file = exec.spec_file.clone().unwrap();
            let pid_file = container.bundle.join(format!("{}.pid", req.exec_id));
            let id = req.id.clone();
            self.start_process(container, &req.exec_id, &pid_file, |io, console| {
                let mut args = vec!["exec".to_string(), "--process".into(), spec_file.display().to_string(), "--detach".into(), "--pid-file".into(), pid_file.display().to_string()];
                if let Some(socket) = console {
                    args.extend(["--console-socket".to_string(), socket.display().to_string()]);
                }
                args.push(id.clone());
                (args, io)
            })?;
            let exec = container.execs.get_mut(&req.exec_id).unwrap();
            exec.status = if exec.exited() { Status::STOPPED } else { Status::RUNNING };
            self.events.exec_started(&req.id, &req.exec_id, exec.pid);
            exec.started_event_sent = true;
            exec.pid
        };
        self.flush_exit_events(container);
        Ok(StartResponse { pid: pid as u32, ..Default::default() })
    }

    pub fn delete(&self, req: DeleteRequest) -> TtrpcResult<DeleteResponse> {
        let mut containers = self.lock();
        let container = TaskService::container(&mut containers, &req.id)?;
        if !req.exec_id.is_empty() {
            let exec = container.execs.get(&req.exec_id).ok_or_else(|| error(Code::NOT_FOUND, format!("exec {} does not exist", req.exec_id)))?;
            if exec.status == Status::RUNNING {
                return Err(error(Code::FAILED_PRECONDITION, format!("exec {} is still running", req.exec_id)));
            }
            let exec = container.execs.remove(&req.exec_id).unwrap();
            if let Some(file) = &exec.spec_file {
                let _ = std::fs::remove_file(file);
            }
            return Ok(DeleteResponse { pid: exec.pid as u32, exit_status: exec.exit_code, exited_at: exec.exited_at.into(), ..Default::default() });
        }
        let log = container.log();
        container.runtime.call(&log, &["delete", "--force", &req.id], None).map_err(|e| error(Code::INTERNAL, e))?;
        if container.mounted_rootfs {
            rootfs::unmount_bundle_rootfs(&container.bundle);
        }
        let container = containers.remove(&req.id).unwrap();
        let init = container.init;
        let at = init.exited_at.clone().unwrap_or_else(now);
        self.events.delete(&req.id, init.pid, init.exit_code, &at);
        Ok(DeleteResponse { pid: init.pid as u32, exit_status: init.exit_code, exited_at: Some(at).into(), ..Default::default() })
    }

    pub fn exec(&self, req: ExecProcessRequest) -> TtrpcResult<Empty> {
        let mut containers = self.lock();
        let container = TaskService::container(&mut containers, &req.id)?;
        if container.execs.contains_key(&req.exec_id) {
            return Err(error(Code::ALREADY_EXISTS, format!("exec {} already exists", req.exec_id)));
        }
        let spec = req.spec.as_ref().ok_or_else(|| error(Code::INVALID_ARGUMENT, "exec without a process spec"))?;
        let spec_file = container.bundle.join(format!("exec-{}.json", req.exec_id));
        std::fs::write(&spec_file, &spec.value).map_err(|e| error(Code::INTERNAL, format!("cannot write {}: {e}", spec_file.display())))?;
        let stdio = StdioSpec { stdin: req.stdin.clone(), stdout: req.stdout.clone(), stderr: req.stderr.clone(), terminal: req.terminal };
        let mut process = Process::new(&req.exec_id, stdio);
        process.spec_file = Some(spec_file);
        container.execs.insert(req.exec_id.clone(), process);
        self.events.exec_added(&req.id, &req.exec_id);
        Ok(Empty::new())
    }

    pub fn state(&self, req: StateRequest) -> TtrpcResult<StateResponse> {
        let mut containers = self.lock();
        let container = TaskService::container(&mut containers, &req.id)?;
        let bundle = container.bundle.display().to_string();
        let process = container.process(&req.exec_id).ok_or_else(|| error(Code::NOT_FOUND, format!("exec {} does not exist", req.exec_id)))?;
        Ok(StateResponse {
            id: if req.exec_id.is_empty() { req.id.clone() } else { req.exec_id.clone() },
            bundle,
            pid: process.pid as u32,
            status: process.status.into(),
            stdin: process.stdio.stdin.clone(),
            stdout: process.stdio.stdout.clone(),
            stderr: process.stdio.stderr.clone(),
            terminal: process.stdio.terminal,
            exit_status: process.exit_code,
            exited_at: process.exited_at.clone().into(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    pub fn kill(&self, req: KillRequest) -> TtrpcResult<Empty> {
        let mut containers = self.lock();
        let container = TaskService::container(&mut containers, &req.id)?;
        if req.exec_id.is_empty() {
            let log = container.log();
            let signal = req.signal.to_string();
            let mut args = vec!["kill"];
            if req.all {
                args.push("--all");
            }
            args.extend([req.id.as_str(), signal.as_str()]);
            container.runtime.call(&log, &args, None).map_err(|e| error(Code::NOT_FOUND, e))?;
        } else {
            let exec = container.execs.get(&req.exec_id).ok_or_else(|| error(Code::NOT_FOUND, format!("exec {} does not exist", req.exec_id)))?;
            if exec.exited() || exec.pid == 0 {
                return Err(error(Code::NOT_FOUND, format!("exec {} is not running", req.exec_id)));
            }
            let signal = nix::sys::signal::Signal::try_from(req.signal as i32).map_err(|e| error(Code::INVALID_ARGUMENT, e))?;
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(exec.pid), signal).map_err(|e| error(Code::NOT_FOUND, e))?;
        }
        Ok(Empty::new())
    }

    pub fn pids(&self, req: PidsRequest) -> TtrpcResult<PidsResponse> {
        let mut containers = self.lock();
        let container = TaskService::container(&mut containers, &req.id)?;
        let log = container.log();
        let out = container.runtime.call(&log, &["ps", "--format", "json", &req.id], None).map_err(|e| error(Code::INTERNAL, e))?;
        let pids: Vec<u32> = serde_json::from_str(&out).map_err(|e| error(Code::INTERNAL, format!("berth ps printed no pid list: {e}")))?;
        let processes = pids.into_iter().map(|pid| ProcessInfo { pid, ..Default::default() }).collect();
        Ok(PidsResponse { processes, ..Default::default() })
    }

    pub fn pause(&self, req: PauseRequest) -> TtrpcResult<Empty> {
        let mut containers = self.lock();
        let container = TaskService::container(&mut containers, &req.id)?;
        let log = container.log();
        container.runtime.call(&log, &["pause", &req.id], None).map_err(|e| error(Code::FAILED_PRECONDITION, e))?;
        container.init.status = Status::PAUSED;
        self.events.paused(&req.id);
        Ok(Empty::new())
    }

    pub fn resume(&self, req: ResumeRequest) -> TtrpcResult<Empty> {
        let mut containers = self.lock();
        let container = TaskService::container(&mut containers, &req.id)?;
        let log = container.log();
        container.runtime.call(&log, &["resume", &req.id], None).map_err(|e| error(Code::FAILED_PRECONDITION, e))?;
        container.init.status = Status::RUNNING;
        self.events.resumed(&req.id);
        Ok(Empty::new())
    }

    pub fn close_io(&self, req: CloseIORequest) -> TtrpcResult<Empty> {
        let mut containers = self.lock();
        let container = TaskService::container(&mut containers, &req.id)?;
        let process = container.process_mut(&req.exec_id).ok_or_else(|| error(Code::NOT_FOUND, format!("exec {} does not exist", req.exec_id)))?;
        if req.stdin {
            process.io.close_stdin();
        }
        Ok(Empty::new())
    }

    pub fn resize_pty(&self, req: ResizePtyRequest) -> TtrpcResult<Empty> {
        let mut containers = self.lock();
        let container = TaskService::container(&mut containers, &req.id)?;
        let process = container.process(&req.exec_id).ok_or_else(|| error(Code::NOT_FOUND, format!("exec {} does not exist", req.exec_id)))?;
        process.io.resize(req.width, req.height).map_err(|e| error(Code::FAILED_PRECONDITION, e))?;
        Ok(Empty::new())
    }

    pub fn update(&self, req: UpdateTaskRequest) -> TtrpcResult<Empty> {
        let mut containers = self.lock();
        let container = TaskService::container(&mut containers, &req.id)?;
        let resources = req.resources.as_ref().ok_or_else(|| error(Code::INVALID_ARGUMENT, "update without resources"))?;
        let file = container.bundle.join("update-resources.json");
        std::fs::write(&file, &resources.value).map_err(|e| error(Code::INTERNAL, format!("cannot write {}: {e}", file.display())))?;
        let log = container.log();
        let result = container.runtime.call(&log, &["update", "--resources", &file.display().to_string(), &req.id], None);
        let _ = std::fs::remove_file(&file);
        result.map_err(|e| error(Code::INTERNAL, e))?;
        Ok(Empty::new())
    }

    /// The exit of a process, or None while it runs (the serving loop then holds the
    /// request and asks again after each exit).
    pub fn wait(&self, req: WaitRequest) -> TtrpcResult<Option<WaitResponse>> {
        let mut containers = self.lock();
        let container = TaskService::container(&mut containers, &req.id)?;
        let process = container.process(&req.exec_id).ok_or_else(|| error(Code::NOT_FOUND, format!("exec {} does not exist", req.exec_id)))?;
        if process.exited() && !process.exit_event_pending {
            return Ok(Some(WaitResponse { exit_status: process.exit_code, exited_at: process.exited_at.clone().into(), ..Default::default() }));
        }
        Ok(None)
    }

    pub fn stats(&self, req: StatsRequest) -> TtrpcResult<StatsResponse> {
        let mut containers = self.lock();
        let container = TaskService::container(&mut containers, &req.id)?;
        let log = container.log();
        let out = container.runtime.call(&log, &["events", "--stats", &req.id], None).map_err(|e| error(Code::INTERNAL, e))?;
        let event: serde_json::Value = serde_json::from_str(out.trim()).map_err(|e| error(Code::INTERNAL, format!("berth events printed no stats: {e}")))?;
        let metrics = metrics_from_stats(&event["data"]);
        let any = Any { type_url: METRICS_TYPE.into(), value: metrics.write_to_bytes().map_err(|e| error(Code::INTERNAL, e))?, ..Default::default() };
        Ok(StatsResponse { stats: Some(any).into(), ..Default::default() })
    }

    pub fn connect(&self, req: ConnectRequest) -> TtrpcResult<ConnectResponse> {
        let mut containers = self.lock();
        let task_pid = TaskService::container(&mut containers, &req.id).map(|c| c.init.pid as u32).unwrap_or(0);
        Ok(ConnectResponse { shim_pid: std::process::id(), task_pid, version: env!("CARGO_PKG_VERSION").into(), ..Default::default() })
    }

    pub fn shutdown(&self, _req: ShutdownRequest) -> TtrpcResult<Empty> {
        if self.lock().is_empty() {
            self.shutdown_requested.set(true);
        }
        Ok(Empty::new())
    }

    pub fn checkpoint(&self, _req: CheckpointTaskRequest) -> TtrpcResult<Empty> {
        Err(error(Code::UNIMPLEMENTED, "not implemented: checkpoint through the berth shim"))
    }
}

impl TaskService {
    /// Runs a create or exec: opens the stdio (or a console socket for a terminal), calls
    /// berth, reads the pid, claims an exit that came early, and attaches the terminal.
    fn start_process(
        &self,
        container: &mut Container,
        exec_id: &str,
        pid_file: &Path,
        command: impl FnOnce(CallIo, Option<&Path>) -> (Vec<String>, CallIo),
    ) -> TtrpcResult<()> {
        let stdio_spec = container.process(exec_id).unwrap().stdio.clone();
        let (io, mut kept, console) = if stdio_spec.terminal {
            let socket = ConsoleSocket::listen().map_err(|e| error(Code::INTERNAL, e))?;
            (CallIo::null(), stdio::ProcessIo::default(), Some(socket))
        } else {
            let (io, kept) = stdio::open(&stdio_spec, &container.id, &self.namespace).map_err(|e| error(Code::INTERNAL, e))?;
            (io, kept, None)
        };
        let (args, io) = command(io, console.as_ref().map(|c| c.path.as_path()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = container.log();
        container.runtime.call(&log, &args, Some(io)).map_err(|e| error(Code::INTERNAL, e))?;
        let pid = read_pid(pid_file)?;
        if let Some(socket) = console {
            let master = socket.receive().map_err(|e| error(Code::INTERNAL, e))?;
            stdio::attach_console(&mut kept, master, &stdio_spec).map_err(|e| error(Code::INTERNAL, e))?;
        }
        let early_exit = self.claim_exit(pid);
        let process = container.process_mut(exec_id).unwrap();
        process.pid = pid;
        process.io = kept;
        if let Some((code, at)) = early_exit {
            process.status = Status::STOPPED;
            process.exit_code = code as u32;
            process.exited_at = Some(at);
            process.exit_event_pending = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(type_url: &str) -> MessageField<Any> {
        let runc = Options { binary_name: "/opt/runc-like".into(), root: "/run/custom".into(), systemd_cgroup: true, ..Default::default() };
        Some(Any { type_url: type_url.into(), value: runc.write_to_bytes().unwrap(), ..Default::default() }).into()
    }

    #[test]
    fn runc_options_are_honoured_only_under_runcs_type() {
        let honoured = runtime_options(&options("containerd.runc.v1.Options"), "ns");
        assert_eq!((honoured.binary.to_str(), honoured.root.to_str(), honoured.systemd_cgroup), (Some("/opt/runc-like"), Some("/run/custom"), true));
        let ignored = runtime_options(&options("io.containerd.other.v1.Options"), "ns");
        assert_eq!((ignored.root.to_str(), ignored.systemd_cgroup), (Some("/run/containerd/berth/ns"), false));
        assert_ne!(ignored.binary.to_str(), Some("/opt/runc-like"));
    }
}
