//! The task service containerd calls (task API v2): each method checks the request, calls
//! the container's runtime, updates the process table and publishes the events it returns.
//! The serving loop calls it on one thread and feeds it the exits it reaps.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use containerd_shim::api::*;
use containerd_shim::protos::api::ProcessInfo;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::Message;

use crate::container::{Container, Process};
use crate::error::ShimError;
use crate::events::Events;
use crate::metrics::{metrics_from_stats, METRICS_TYPE};
use crate::process_table::{Event, ProcessTable};
use crate::rootfs;
use crate::runtime::{BerthCli, ProcessStdio, Runtime};
use crate::stdio::{self, ConsoleSocket, ProcessIo, StdioSpec};

/// The task service: the containers, their processes' state, and the event sender.
pub struct TaskService {
    containers: RefCell<HashMap<String, Container>>,
    table: RefCell<ProcessTable>,
    events: Events,
    namespace: String,
    shutdown_requested: Cell<bool>,
}

fn now() -> Timestamp {
    containerd_shim::util::timestamp().unwrap_or_default()
}

fn container_mut<'a>(containers: &'a mut HashMap<String, Container>, id: &str) -> Result<&'a mut Container, ShimError> {
    containers.get_mut(id).ok_or_else(|| ShimError::NoContainer { id: id.to_string() })
}

fn no_exec(exec_id: &str) -> ShimError {
    ShimError::NoExec { exec_id: exec_id.to_string() }
}

/// `linux.cgroupsPath` of the bundle's config.json.
fn cgroup_path_of(bundle: &Path) -> Option<String> {
    let text = std::fs::read_to_string(bundle.join("config.json")).ok()?;
    let spec: serde_json::Value = serde_json::from_str(&text).ok()?;
    spec["linux"]["cgroupsPath"].as_str().map(String::from)
}

impl TaskService {
    pub fn new(events: Events, namespace: &str) -> TaskService {
        TaskService {
            containers: RefCell::new(HashMap::new()),
            table: RefCell::new(ProcessTable::default()),
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
            for (exec_id, p) in std::iter::once((&String::new(), &c.init)).chain(c.execs.iter()) {
                if let Some(stdin) = &p.io.stdin {
                    let (fd, events) = stdin.interest();
                    out.push(((c.id.clone(), exec_id.clone()), fd, events));
                }
            }
        }
        out
    }

    /// Forwards stdin the loop found ready; a finished one is closed (the process reads EOF).
    pub fn pump_stdin(&self, (id, exec_id): &(String, String)) {
        let mut containers = self.containers.borrow_mut();
        let Some(process) = containers.get_mut(id).and_then(|c| c.process_mut(exec_id)) else { return };
        if let Some(stdin) = process.io.stdin.as_mut() {
            if !stdin.pump() {
                process.io.stdin = None;
            }
        }
    }

    /// Sends the events the calls and exits so far have queued.
    pub fn send_events(&self) {
        self.events.send_queued();
    }

    /// Whether containerd asked the shim to exit (Shutdown with no container left).
    pub fn shutdown_requested(&self) -> bool {
        self.shutdown_requested.get()
    }

    /// Records a reaped pid's exit and publishes what may now go out.
    pub fn record_exit(&self, pid: i32, code: i32) {
        let mut containers = self.containers.borrow_mut();
        let mut table = self.table.borrow_mut();
        let mut events = Vec::new();
        if let Some(container) = table.container_of_init(pid).and_then(|id| containers.get(id)) {
            events.extend(oom_check(&mut table, container));
        }
        events.extend(table.exit_seen(pid, code as u32, now()));
        drop(table);
        self.publish(&mut containers, events);
    }

    /// Publishes the process table's events; a process's output is flushed before
    /// containerd hears of its exit.
    fn publish(&self, containers: &mut HashMap<String, Container>, events: Vec<Event>) {
        for event in events {
            match event {
                Event::Started { id, exec_id, pid } if exec_id.is_empty() => self.events.start(&id, pid),
                Event::Started { id, exec_id, pid } => self.events.exec_started(&id, &exec_id, pid),
                Event::ExecAdded { id, exec_id } => self.events.exec_added(&id, &exec_id),
                Event::Oom { id } => self.events.oom(&id),
                Event::Exit { id, exec_id, pid, exit } => {
                    if let Some(process) = containers.get_mut(&id).and_then(|c| c.process_mut(&exec_id)) {
                        process.io.finish();
                    }
                    // containerd names the init's exit by the container id.
                    let process_id = if exec_id.is_empty() { &id } else { &exec_id };
                    self.events.exit(&id, process_id, pid, exit.code, &exit.at);
                }
            }
        }
    }

    /// Runs a create or exec through `launch`: opens the stdio (or a console socket for a
    /// terminal), hands it to the runtime, and attaches the terminal. Returns the pid.
    fn launch_process(
        &self,
        container: &mut Container,
        exec_id: &str,
        launch: impl FnOnce(&dyn Runtime, ProcessStdio) -> Result<i32, ShimError>,
    ) -> Result<i32, ShimError> {
        let spec = container.process(exec_id).ok_or_else(|| no_exec(exec_id))?.stdio.clone();
        let console = if spec.terminal { Some(ConsoleSocket::listen().map_err(ShimError::Stdio)?) } else { None };
        let mut kept = ProcessIo::default();
        let call_stdio = match &console {
            Some(socket) => ProcessStdio::Console(&socket.path),
            None => {
                let (io, opened) = stdio::open(&spec, &container.id, &self.namespace).map_err(ShimError::Stdio)?;
                kept = opened;
                ProcessStdio::Inherit(io)
            }
        };
        let pid = launch(container.runtime.as_ref(), call_stdio)?;
        if let Some(socket) = console {
            let master = socket.receive().map_err(ShimError::Stdio)?;
            stdio::attach_console(&mut kept, master, &spec).map_err(ShimError::Stdio)?;
        }
        if let Some(process) = container.process_mut(exec_id) {
            process.io = kept;
        }
        Ok(pid)
    }
}

/// Tells the table of an OOM kill in the container's cgroup, which containerd wants before
/// the init's Exit.
fn oom_check(table: &mut ProcessTable, container: &Container) -> Vec<Event> {
    if container.oom_kills() > 0 {
        table.oom_seen(&container.id)
    } else {
        Vec::new()
    }
}

/// The task API's methods, one per request containerd sends.
impl TaskService {
    pub fn create(&self, req: CreateTaskRequest) -> Result<CreateTaskResponse, ShimError> {
        let bundle = PathBuf::from(&req.bundle);
        let runtime = BerthCli::from_options(&req.options, &self.namespace, &bundle);
        let stdio = StdioSpec {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let mounted = rootfs::mount_bundle_rootfs(&bundle, &req.rootfs).map_err(ShimError::Mount)?;
        let mut container = Container {
            id: req.id.clone(),
            bundle: bundle.clone(),
            runtime: Box::new(runtime),
            init: Process::new(stdio.clone(), None),
            execs: HashMap::new(),
            mounted_rootfs: mounted,
            cgroup_path: cgroup_path_of(&bundle),
        };
        let pid_file = bundle.join("init.pid");
        let created = self
            .launch_process(&mut container, "", |runtime, stdio| runtime.create(&req.id, &bundle, &pid_file, stdio));
        let pid = match created {
            Ok(pid) => pid,
            Err(e) => {
                if mounted {
                    rootfs::unmount_bundle_rootfs(&bundle);
                }
                return Err(e);
            }
        };
        self.events.create(&req.id, &req.bundle, &stdio, pid);
        let mut table = self.table.borrow_mut();
        table.container_created(&req.id, pid);
        // The init may have ended before create returned: its Exit (after any OOM) goes out now.
        let mut events = Vec::new();
        if table.process(&req.id, "")?.exited() {
            events.extend(oom_check(&mut table, &container));
            events.extend(table.flush(&req.id));
        }
        drop(table);
        let mut containers = self.containers.borrow_mut();
        containers.insert(req.id.clone(), container);
        self.publish(&mut containers, events);
        Ok(CreateTaskResponse { pid: pid as u32, ..Default::default() })
    }

    pub fn start(&self, req: StartRequest) -> Result<StartResponse, ShimError> {
        let mut containers = self.containers.borrow_mut();
        let container = container_mut(&mut containers, &req.id)?;
        let mut table = self.table.borrow_mut();
        if req.exec_id.is_empty() {
            container.runtime.start(&req.id)?;
        } else {
            let spec_file = container
                .execs
                .get(&req.exec_id)
                .and_then(|e| e.spec_file.clone())
                .ok_or_else(|| no_exec(&req.exec_id))?;
            let pid_file = container.bundle.join(format!("{}.pid", req.exec_id));
            let pid = self.launch_process(container, &req.exec_id, |runtime, stdio| {
                runtime.exec(&req.id, &spec_file, &pid_file, stdio)
            })?;
            table.exec_pid_known(&req.id, &req.exec_id, pid)?;
        }
        let pid = table.process(&req.id, &req.exec_id)?.pid;
        let events = table.started(&req.id, &req.exec_id)?;
        drop(table);
        self.publish(&mut containers, events);
        Ok(StartResponse { pid: pid as u32, ..Default::default() })
    }

    pub fn delete(&self, req: DeleteRequest) -> Result<DeleteResponse, ShimError> {
        let mut containers = self.containers.borrow_mut();
        let container = container_mut(&mut containers, &req.id)?;
        let mut table = self.table.borrow_mut();
        if !req.exec_id.is_empty() {
            let exec = table.remove_exec(&req.id, &req.exec_id)?;
            if let Some(file) = container.execs.remove(&req.exec_id).and_then(|e| e.spec_file) {
                let _ = std::fs::remove_file(file);
            }
            let (exit_status, exited_at) = exec.exit.map(|e| (e.code, Some(e.at))).unwrap_or((0, None));
            return Ok(DeleteResponse {
                pid: exec.pid as u32,
                exit_status,
                exited_at: exited_at.into(),
                ..Default::default()
            });
        }
        container.runtime.delete(&req.id)?;
        if container.mounted_rootfs {
            rootfs::unmount_bundle_rootfs(&container.bundle);
        }
        containers.remove(&req.id);
        let init = table.remove_container(&req.id)?;
        let (exit_status, at) = init.exit.map(|e| (e.code, e.at)).unwrap_or_else(|| (0, now()));
        self.events.delete(&req.id, init.pid, exit_status, &at);
        Ok(DeleteResponse { pid: init.pid as u32, exit_status, exited_at: Some(at).into(), ..Default::default() })
    }

    pub fn exec(&self, req: ExecProcessRequest) -> Result<Empty, ShimError> {
        let mut containers = self.containers.borrow_mut();
        let container = container_mut(&mut containers, &req.id)?;
        if container.execs.contains_key(&req.exec_id) {
            return Err(ShimError::ExecExists { exec_id: req.exec_id.clone() });
        }
        let spec = req
            .spec
            .as_ref()
            .ok_or_else(|| ShimError::BadRequest(format!("exec {} without a process spec", req.exec_id)))?;
        let spec_file = container.bundle.join(format!("exec-{}.json", req.exec_id));
        std::fs::write(&spec_file, &spec.value)
            .map_err(|source| ShimError::File { path: spec_file.clone(), source })?;
        let events = self.table.borrow_mut().exec_added(&req.id, &req.exec_id)?;
        let stdio = StdioSpec {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        container.execs.insert(req.exec_id.clone(), Process::new(stdio, Some(spec_file)));
        self.publish(&mut containers, events);
        Ok(Empty::new())
    }

    pub fn state(&self, req: StateRequest) -> Result<StateResponse, ShimError> {
        let mut containers = self.containers.borrow_mut();
        let container = container_mut(&mut containers, &req.id)?;
        let process = container.process(&req.exec_id).ok_or_else(|| no_exec(&req.exec_id))?;
        let table = self.table.borrow();
        let state = table.process(&req.id, &req.exec_id)?;
        Ok(StateResponse {
            id: if req.exec_id.is_empty() { req.id.clone() } else { req.exec_id.clone() },
            bundle: container.bundle.display().to_string(),
            pid: state.pid as u32,
            status: state.status.into(),
            stdin: process.stdio.stdin.clone(),
            stdout: process.stdio.stdout.clone(),
            stderr: process.stdio.stderr.clone(),
            terminal: process.stdio.terminal,
            exit_status: state.exit.as_ref().map_or(0, |e| e.code),
            exited_at: state.exit.as_ref().map(|e| e.at.clone()).into(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    pub fn kill(&self, req: KillRequest) -> Result<Empty, ShimError> {
        let mut containers = self.containers.borrow_mut();
        let container = container_mut(&mut containers, &req.id)?;
        if req.exec_id.is_empty() {
            container.runtime.kill(&req.id, req.signal, req.all)?;
        } else {
            let pid = self.table.borrow().exec_to_signal(&req.id, &req.exec_id)?;
            let signal = nix::sys::signal::Signal::try_from(req.signal as i32)
                .map_err(|e| ShimError::BadRequest(format!("signal {}: {e}", req.signal)))?;
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
                .map_err(|source| ShimError::Signal { pid, source })?;
        }
        Ok(Empty::new())
    }

    pub fn pids(&self, req: PidsRequest) -> Result<PidsResponse, ShimError> {
        let mut containers = self.containers.borrow_mut();
        let container = container_mut(&mut containers, &req.id)?;
        let processes =
            container.runtime.ps(&req.id)?.into_iter().map(|pid| ProcessInfo { pid, ..Default::default() }).collect();
        Ok(PidsResponse { processes, ..Default::default() })
    }

    pub fn pause(&self, req: PauseRequest) -> Result<Empty, ShimError> {
        let mut containers = self.containers.borrow_mut();
        let container = container_mut(&mut containers, &req.id)?;
        container.runtime.pause(&req.id)?;
        self.table.borrow_mut().set_paused(&req.id, true)?;
        self.events.paused(&req.id);
        Ok(Empty::new())
    }

    pub fn resume(&self, req: ResumeRequest) -> Result<Empty, ShimError> {
        let mut containers = self.containers.borrow_mut();
        let container = container_mut(&mut containers, &req.id)?;
        container.runtime.resume(&req.id)?;
        self.table.borrow_mut().set_paused(&req.id, false)?;
        self.events.resumed(&req.id);
        Ok(Empty::new())
    }

    pub fn close_io(&self, req: CloseIORequest) -> Result<Empty, ShimError> {
        let mut containers = self.containers.borrow_mut();
        let container = container_mut(&mut containers, &req.id)?;
        let process = container.process_mut(&req.exec_id).ok_or_else(|| no_exec(&req.exec_id))?;
        if req.stdin {
            process.io.close_stdin();
        }
        Ok(Empty::new())
    }

    pub fn resize_pty(&self, req: ResizePtyRequest) -> Result<Empty, ShimError> {
        let mut containers = self.containers.borrow_mut();
        let container = container_mut(&mut containers, &req.id)?;
        let process = container.process(&req.exec_id).ok_or_else(|| no_exec(&req.exec_id))?;
        process.io.resize(req.width, req.height).map_err(ShimError::Terminal)?;
        Ok(Empty::new())
    }

    pub fn update(&self, req: UpdateTaskRequest) -> Result<Empty, ShimError> {
        let mut containers = self.containers.borrow_mut();
        let container = container_mut(&mut containers, &req.id)?;
        let resources = req
            .resources
            .as_ref()
            .ok_or_else(|| ShimError::BadRequest(format!("update of {} without resources", req.id)))?;
        let file = container.bundle.join("update-resources.json");
        std::fs::write(&file, &resources.value).map_err(|source| ShimError::File { path: file.clone(), source })?;
        let result = container.runtime.update(&req.id, &file);
        let _ = std::fs::remove_file(&file);
        result?;
        Ok(Empty::new())
    }

    /// The exit of a process, or None while it runs (the serving loop then holds the
    /// request and asks again after each exit).
    pub fn wait(&self, req: &WaitRequest) -> Result<Option<WaitResponse>, ShimError> {
        let exit = self.table.borrow().wait(&req.id, &req.exec_id)?;
        Ok(exit.map(|exit| WaitResponse {
            exit_status: exit.code,
            exited_at: Some(exit.at).into(),
            ..Default::default()
        }))
    }

    pub fn stats(&self, req: StatsRequest) -> Result<StatsResponse, ShimError> {
        let mut containers = self.containers.borrow_mut();
        let container = container_mut(&mut containers, &req.id)?;
        let metrics = metrics_from_stats(&container.runtime.stats(&req.id)?);
        let value = metrics.write_to_bytes().map_err(|e| ShimError::Encode(format!("metrics of {}: {e}", req.id)))?;
        let any = Any { type_url: METRICS_TYPE.into(), value, ..Default::default() };
        Ok(StatsResponse { stats: Some(any).into(), ..Default::default() })
    }

    pub fn connect(&self, req: ConnectRequest) -> Result<ConnectResponse, ShimError> {
        let task_pid = self.table.borrow().process(&req.id, "").map_or(0, |init| init.pid as u32);
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })
    }

    pub fn shutdown(&self, _req: ShutdownRequest) -> Result<Empty, ShimError> {
        if self.containers.borrow().is_empty() {
            self.shutdown_requested.set(true);
        }
        Ok(Empty::new())
    }

    pub fn checkpoint(&self, _req: CheckpointTaskRequest) -> Result<Empty, ShimError> {
        Err(ShimError::Unimplemented("checkpoint".into()))
    }
}
