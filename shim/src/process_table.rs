//! The state of every process the shim runs (pid, status, exit) and the order of their
//! events: it takes what happened (a pid learned, a Start done, an exit reaped, an exec
//! added, an OOM kill seen) and returns the events to publish, in containerd's order (an
//! exec's Start before its Exit, OOM before the init's Exit, the init's Exit after every
//! started exec's; an init that ends before its Start exits at once). Pure: no I/O, so
//! every ordering rule is unit-tested.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use containerd_shim::api::Status;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;

use crate::error::ShimError;

/// How long an unclaimed exit is kept for a process whose pid is not known yet.
const UNCLAIMED_TTL: Duration = Duration::from_secs(60);

/// How and when a process ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Exit {
    /// The exit code, 128+signal when killed.
    pub code: u32,
    pub at: Timestamp,
}

/// An event to publish. An empty `exec_id` means the container's init.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// TaskStart for the init, TaskExecStarted for an exec.
    Started {
        id: String,
        exec_id: String,
        pid: i32,
    },
    ExecAdded {
        id: String,
        exec_id: String,
    },
    Oom {
        id: String,
    },
    Exit {
        id: String,
        exec_id: String,
        pid: i32,
        exit: Exit,
    },
}

/// One process: the container's init or an exec.
#[derive(Debug, Clone)]
pub struct ProcessState {
    /// 0 until the runtime reports it.
    pub pid: i32,
    pub status: Status,
    pub exit: Option<Exit>,
    /// Its Start (or ExecStarted) event went out, so its Exit may follow.
    start_published: bool,
    /// An exit recorded but held back until its Start event or the execs' exits are out.
    exit_pending: bool,
}

impl ProcessState {
    fn new(pid: i32) -> ProcessState {
        ProcessState { pid, status: Status::CREATED, exit: None, start_published: false, exit_pending: false }
    }

    pub fn exited(&self) -> bool {
        self.status == Status::STOPPED
    }

    fn record_exit(&mut self, exit: Exit) {
        self.status = Status::STOPPED;
        self.exit = Some(exit);
        self.exit_pending = true;
    }
}

/// One container's processes.
struct Processes {
    init: ProcessState,
    execs: HashMap<String, ProcessState>,
    /// An OOM kill was seen; its event goes out right before the init's Exit.
    oom_pending: bool,
}

/// An exit reaped for a pid no process claims yet (a process that ended before the
/// runtime call that started it returned its pid).
struct UnclaimedExit {
    exit: Exit,
    seen: Instant,
}

/// Every container's processes, and exits held for pids not known yet.
#[derive(Default)]
pub struct ProcessTable {
    containers: HashMap<String, Processes>,
    unclaimed: HashMap<i32, UnclaimedExit>,
}

impl ProcessTable {
    /// A container was created with init `pid`; an exit already reaped for it is claimed.
    pub fn container_created(&mut self, id: &str, pid: i32) {
        let mut init = ProcessState::new(pid);
        if let Some(early) = self.unclaimed.remove(&pid) {
            init.record_exit(early.exit);
        }
        self.containers.insert(id.to_string(), Processes { init, execs: HashMap::new(), oom_pending: false });
    }

    /// Exec `exec_id` was added (not started yet).
    pub fn exec_added(&mut self, id: &str, exec_id: &str) -> Result<Vec<Event>, ShimError> {
        let container = self.container_mut(id)?;
        if container.execs.contains_key(exec_id) {
            return Err(ShimError::ExecExists { exec_id: exec_id.to_string() });
        }
        container.execs.insert(exec_id.to_string(), ProcessState::new(0));
        Ok(vec![Event::ExecAdded { id: id.to_string(), exec_id: exec_id.to_string() }])
    }

    /// The runtime reported the pid of exec `exec_id`; an exit already reaped for it is claimed.
    pub fn exec_pid_known(&mut self, id: &str, exec_id: &str, pid: i32) -> Result<(), ShimError> {
        let early = self.unclaimed.remove(&pid);
        let exec = self.process_mut(id, exec_id)?;
        exec.pid = pid;
        if let Some(early) = early {
            exec.record_exit(early.exit);
        }
        Ok(())
    }

    /// The process was started: its Start event, then any exit it allows out.
    pub fn started(&mut self, id: &str, exec_id: &str) -> Result<Vec<Event>, ShimError> {
        let process = self.process_mut(id, exec_id)?;
        if !process.exited() {
            process.status = Status::RUNNING;
        }
        process.start_published = true;
        let mut events = vec![Event::Started { id: id.to_string(), exec_id: exec_id.to_string(), pid: process.pid }];
        events.extend(self.flush(id));
        Ok(events)
    }

    /// The container whose running init has `pid`, if any (the caller then looks for an OOM
    /// kill before reporting the exit).
    pub fn container_of_init(&self, pid: i32) -> Option<&str> {
        self.containers.iter().find(|(_, c)| c.init.pid == pid && !c.init.exited()).map(|(id, _)| id.as_str())
    }

    /// An OOM kill was seen in the container: published before the init's Exit.
    pub fn oom_seen(&mut self, id: &str) -> Vec<Event> {
        let Some(container) = self.containers.get_mut(id) else { return Vec::new() };
        // Once the init's Exit is out, an OOM kill has nothing left to precede.
        if container.init.exited() && !container.init.exit_pending {
            return Vec::new();
        }
        container.oom_pending = true;
        self.flush(id)
    }

    /// The reaper saw `pid` exit: the exits this allows out, or none while they wait for a
    /// Start or for the execs. An exit of an unknown pid is held until the pid is learned.
    pub fn exit_seen(&mut self, pid: i32, code: u32, at: Timestamp) -> Vec<Event> {
        let exit = Exit { code, at };
        let owner = self.containers.iter_mut().find_map(|(id, c)| {
            if c.init.pid == pid && !c.init.exited() {
                return Some((id.clone(), &mut c.init));
            }
            c.execs.values_mut().find(|p| p.pid == pid && !p.exited()).map(|p| (id.clone(), p))
        });
        let Some((id, process)) = owner else {
            self.unclaimed.retain(|_, held| held.seen.elapsed() < UNCLAIMED_TTL);
            self.unclaimed.insert(pid, UnclaimedExit { exit, seen: Instant::now() });
            return Vec::new();
        };
        process.record_exit(exit);
        self.flush(&id)
    }

    /// Pending exits whose order allows them out: an exec's after its Start, and the init's
    /// after every started exec's (with OOM right before it). The init's Exit does not wait
    /// for a Start: the shim handles one request at a time, so no Start of it is under way
    /// when its exit is reaped, and one that comes later fails (the runtime refuses to start
    /// a stopped container). Held, it would leave Wait unanswered for good, as when
    /// containerd's restart monitor kills a task still in CREATED and waits for it.
    pub fn flush(&mut self, id: &str) -> Vec<Event> {
        let Some(container) = self.containers.get_mut(id) else { return Vec::new() };
        let mut events = Vec::new();
        for (exec_id, exec) in &mut container.execs {
            if exec.exit_pending && exec.start_published {
                exec.exit_pending = false;
                if let Some(exit) = &exec.exit {
                    events.push(Event::Exit {
                        id: id.to_string(),
                        exec_id: exec_id.clone(),
                        pid: exec.pid,
                        exit: exit.clone(),
                    });
                }
            }
        }
        let execs_done = container.execs.values().all(|e| !e.start_published || (e.exited() && !e.exit_pending));
        let init = &mut container.init;
        if init.exit_pending && execs_done {
            if container.oom_pending {
                container.oom_pending = false;
                events.push(Event::Oom { id: id.to_string() });
            }
            init.exit_pending = false;
            if let Some(exit) = &init.exit {
                events.push(Event::Exit {
                    id: id.to_string(),
                    exec_id: String::new(),
                    pid: init.pid,
                    exit: exit.clone(),
                });
            }
        }
        events
    }

    /// What Wait answers: the exit once its event is out, None while the process runs.
    pub fn wait(&self, id: &str, exec_id: &str) -> Result<Option<Exit>, ShimError> {
        let process = self.process(id, exec_id)?;
        Ok(if process.exit_pending { None } else { process.exit.clone() })
    }

    /// The pid a Kill of exec `exec_id` signals; an exec not started or exited has none.
    pub fn exec_to_signal(&self, id: &str, exec_id: &str) -> Result<i32, ShimError> {
        let exec = self.process(id, exec_id)?;
        if exec.exited() || exec.pid == 0 {
            return Err(ShimError::ExecNotRunning { exec_id: exec_id.to_string() });
        }
        Ok(exec.pid)
    }

    /// The container's init was paused (true) or resumed.
    pub fn set_paused(&mut self, id: &str, paused: bool) -> Result<(), ShimError> {
        self.container_mut(id)?.init.status = if paused { Status::PAUSED } else { Status::RUNNING };
        Ok(())
    }

    /// Forgets an exec that no longer runs and returns its last state.
    pub fn remove_exec(&mut self, id: &str, exec_id: &str) -> Result<ProcessState, ShimError> {
        let container = self.container_mut(id)?;
        let exec = container.execs.get(exec_id).ok_or_else(|| ShimError::NoExec { exec_id: exec_id.to_string() })?;
        if exec.status == Status::RUNNING {
            return Err(ShimError::ExecStillRunning { exec_id: exec_id.to_string() });
        }
        container.execs.remove(exec_id).ok_or_else(|| ShimError::NoExec { exec_id: exec_id.to_string() })
    }

    /// Forgets a deleted container and returns its init's last state.
    pub fn remove_container(&mut self, id: &str) -> Result<ProcessState, ShimError> {
        self.containers.remove(id).map(|c| c.init).ok_or_else(|| ShimError::NoContainer { id: id.to_string() })
    }

    /// The init (empty `exec_id`) or an exec of container `id`.
    pub fn process(&self, id: &str, exec_id: &str) -> Result<&ProcessState, ShimError> {
        let container = self.containers.get(id).ok_or_else(|| ShimError::NoContainer { id: id.to_string() })?;
        if exec_id.is_empty() {
            return Ok(&container.init);
        }
        container.execs.get(exec_id).ok_or_else(|| ShimError::NoExec { exec_id: exec_id.to_string() })
    }

    fn process_mut(&mut self, id: &str, exec_id: &str) -> Result<&mut ProcessState, ShimError> {
        let container = self.container_mut(id)?;
        if exec_id.is_empty() {
            return Ok(&mut container.init);
        }
        container.execs.get_mut(exec_id).ok_or_else(|| ShimError::NoExec { exec_id: exec_id.to_string() })
    }

    fn container_mut(&mut self, id: &str) -> Result<&mut Processes, ShimError> {
        self.containers.get_mut(id).ok_or_else(|| ShimError::NoContainer { id: id.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "c1";

    fn at(seconds: i64) -> Timestamp {
        Timestamp { seconds, ..Default::default() }
    }

    fn exit(exec_id: &str, pid: i32, code: u32, seconds: i64) -> Event {
        Event::Exit { id: ID.into(), exec_id: exec_id.into(), pid, exit: Exit { code, at: at(seconds) } }
    }

    fn started(exec_id: &str, pid: i32) -> Event {
        Event::Started { id: ID.into(), exec_id: exec_id.into(), pid }
    }

    /// A container with init pid 100, started.
    fn running() -> ProcessTable {
        let mut table = ProcessTable::default();
        table.container_created(ID, 100);
        assert_eq!(table.started(ID, "").unwrap(), vec![started("", 100)]);
        table
    }

    #[test]
    fn an_exit_before_its_pid_is_known_is_held_then_claimed() {
        let mut table = running();
        table.exec_added(ID, "e1").unwrap();
        // The exec ended before `berth exec` returned its pid.
        assert_eq!(table.exit_seen(200, 3, at(5)), vec![]);
        table.exec_pid_known(ID, "e1", 200).unwrap();
        assert!(table.process(ID, "e1").unwrap().exited());
        assert_eq!(table.wait(ID, "e1").unwrap(), None, "no Wait answer before the Exit event");
        assert_eq!(table.started(ID, "e1").unwrap(), vec![started("e1", 200), exit("e1", 200, 3, 5)]);
        assert_eq!(table.wait(ID, "e1").unwrap(), Some(Exit { code: 3, at: at(5) }));
    }

    #[test]
    fn an_init_exit_before_create_returned_is_claimed() {
        let mut table = ProcessTable::default();
        assert_eq!(table.exit_seen(100, 137, at(1)), vec![]);
        table.container_created(ID, 100);
        assert_eq!(table.process(ID, "").unwrap().status, Status::STOPPED);
        assert_eq!(table.flush(ID), vec![exit("", 100, 137, 1)]);
        assert_eq!(table.wait(ID, "").unwrap(), Some(Exit { code: 137, at: at(1) }));
    }

    #[test]
    fn an_init_killed_before_its_start_exits_at_once() {
        let mut table = ProcessTable::default();
        table.container_created(ID, 100);
        // Killed in CREATED (containerd's restart monitor does that): no Start will follow.
        assert_eq!(table.exit_seen(100, 137, at(2)), vec![exit("", 100, 137, 2)]);
        assert_eq!(table.wait(ID, "").unwrap(), Some(Exit { code: 137, at: at(2) }));
    }

    #[test]
    fn an_init_exit_waits_for_a_running_exec_to_exit() {
        let mut table = running();
        assert_eq!(table.exec_added(ID, "e1").unwrap(), vec![Event::ExecAdded { id: ID.into(), exec_id: "e1".into() }]);
        table.exec_pid_known(ID, "e1", 200).unwrap();
        assert_eq!(table.started(ID, "e1").unwrap(), vec![started("e1", 200)]);
        assert_eq!(table.exit_seen(100, 0, at(7)), vec![], "the init's Exit is held while the exec runs");
        assert_eq!(table.wait(ID, "").unwrap(), None);
        assert_eq!(table.exit_seen(200, 9, at(8)), vec![exit("e1", 200, 9, 8), exit("", 100, 0, 7)]);
        assert_eq!(table.wait(ID, "").unwrap(), Some(Exit { code: 0, at: at(7) }));
    }

    #[test]
    fn an_exec_never_started_does_not_hold_the_init_exit() {
        let mut table = running();
        table.exec_added(ID, "e1").unwrap();
        assert_eq!(table.exit_seen(100, 1, at(3)), vec![exit("", 100, 1, 3)]);
    }

    #[test]
    fn oom_goes_out_right_before_the_init_exit() {
        let mut table = running();
        assert_eq!(table.container_of_init(100), Some(ID));
        assert_eq!(table.oom_seen(ID), vec![], "OOM waits for the exit it caused");
        assert_eq!(table.exit_seen(100, 137, at(4)), vec![Event::Oom { id: ID.into() }, exit("", 100, 137, 4)]);
        assert_eq!(table.container_of_init(100), None, "an exited init is no longer matched by pid");
        assert_eq!(table.oom_seen(ID), vec![], "nothing follows the published Exit");
    }

    #[test]
    fn a_second_wait_gets_the_same_exit() {
        let mut table = running();
        table.exit_seen(100, 2, at(6));
        let first = table.wait(ID, "").unwrap();
        assert_eq!(first, Some(Exit { code: 2, at: at(6) }));
        assert_eq!(table.wait(ID, "").unwrap(), first);
    }

    #[test]
    fn a_kill_of_an_exited_or_unstarted_exec_finds_nothing_to_signal() {
        let mut table = running();
        table.exec_added(ID, "e1").unwrap();
        assert!(matches!(table.exec_to_signal(ID, "e1"), Err(ShimError::ExecNotRunning { .. })), "no pid yet");
        table.exec_pid_known(ID, "e1", 200).unwrap();
        table.started(ID, "e1").unwrap();
        assert_eq!(table.exec_to_signal(ID, "e1").unwrap(), 200);
        table.exit_seen(200, 0, at(1));
        let refused = table.exec_to_signal(ID, "e1").unwrap_err();
        assert_eq!(refused.code(), containerd_shim::protos::ttrpc::Code::NOT_FOUND);
        assert!(matches!(table.exec_to_signal(ID, "nope"), Err(ShimError::NoExec { .. })));
    }

    #[test]
    fn a_reused_pid_is_matched_to_the_live_process() {
        let mut table = running();
        table.exec_added(ID, "e1").unwrap();
        table.exec_pid_known(ID, "e1", 200).unwrap();
        table.started(ID, "e1").unwrap();
        assert_eq!(table.exit_seen(200, 0, at(1)), vec![exit("e1", 200, 0, 1)]);
        table.exec_added(ID, "e2").unwrap();
        table.exec_pid_known(ID, "e2", 200).unwrap();
        table.started(ID, "e2").unwrap();
        assert_eq!(table.exit_seen(200, 5, at(2)), vec![exit("e2", 200, 5, 2)]);
    }

    #[test]
    fn exec_ids_are_unique_and_running_execs_are_not_removed() {
        let mut table = running();
        table.exec_added(ID, "e1").unwrap();
        assert!(matches!(table.exec_added(ID, "e1"), Err(ShimError::ExecExists { .. })));
        table.exec_pid_known(ID, "e1", 200).unwrap();
        table.started(ID, "e1").unwrap();
        assert!(matches!(table.remove_exec(ID, "e1"), Err(ShimError::ExecStillRunning { .. })));
        table.exit_seen(200, 0, at(1));
        assert_eq!(table.remove_exec(ID, "e1").unwrap().pid, 200);
        assert!(matches!(table.process(ID, "e1"), Err(ShimError::NoExec { .. })));
        assert!(matches!(table.exec_added("other", "e1"), Err(ShimError::NoContainer { .. })));
    }
}
