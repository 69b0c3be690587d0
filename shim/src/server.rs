//! The serving loop, on one thread: accepts containerd's ttrpc connections, answers task
//! requests, reaps children on SIGCHLD (a signalfd) and answers held Waits as exits arrive.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};

use containerd_shim::api::*;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::ttrpc::{Request, Status};
use log::{debug, warn};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::error::ShimError;
use crate::task::TaskService;
use crate::wire;

const TASK_SERVICE: &str = "containerd.task.v2.Task";

/// One client connection and the bytes of its next, partial message.
struct Connection {
    stream: UnixStream,
    pending: Vec<u8>,
}

/// A Wait whose process still runs: answered after a later exit.
struct HeldWait {
    connection: u64,
    stream_id: u32,
    request: WaitRequest,
}

/// What a request comes to: an answer now, or a Wait to hold.
enum Outcome {
    Answer(Result<Vec<u8>, Status>),
    Hold(WaitRequest),
}

/// Makes `command`'s process start with no signal blocked. The shim blocks SIGTERM, SIGINT
/// and SIGCHLD for its signalfd, a child inherits that mask, and berth's container process
/// would inherit it from berth: a container trapping SIGTERM would then never see it.
pub fn unblock_signals_in_child(command: &mut std::process::Command) {
    // SAFETY: pthread_sigmask is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(command, || {
            SigSet::empty().thread_set_mask().map_err(std::io::Error::from)
        });
    }
}

/// Serves until containerd's Shutdown finds no container left.
pub fn serve(listener: UnixListener, service: &TaskService) -> Result<(), String> {
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        signals.add(signal);
    }
    // Blocked here so they arrive on the signalfd; every child unblocks them again
    // (`unblock_signals_in_child`).
    signals.thread_block().map_err(|e| format!("cannot block signals: {e}"))?;
    let signal_fd = SignalFd::with_flags(&signals, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| format!("cannot create a signalfd: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| format!("cannot configure the shim socket: {e}"))?;
    let mut connections: HashMap<u64, Connection> = HashMap::new();
    let mut held: Vec<HeldWait> = Vec::new();
    let mut next_connection = 0u64;
    // Children that exited before the loop started (none are expected) are reaped first.
    reap(service);
    while !service.shutdown_requested() {
        // Events after the answers of the last round: containerd has those before it takes
        // the events they caused.
        service.send_events();
        let ids: Vec<u64> = connections.keys().copied().collect();
        let stdins = service.stdin_interests();
        let (signal_ready, listener_ready, readable, stdin_ready) = {
            let mut fds = vec![
                PollFd::new(signal_fd.as_fd(), PollFlags::POLLIN),
                PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            ];
            fds.extend(ids.iter().map(|id| PollFd::new(connections[id].stream.as_fd(), PollFlags::POLLIN)));
            // SAFETY: the stdin descriptors belong to processes the service holds; nothing
            // closes them before the poll returns.
            fds.extend(stdins.iter().map(|(_, fd, events)| {
                PollFd::new(unsafe { BorrowedFd::borrow_raw(*fd) }, PollFlags::from_bits_truncate(*events))
            }));
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(format!("poll failed: {e}")),
            }
            let ready: Vec<bool> = fds.iter().map(|fd| fd.revents().is_some_and(|r| !r.is_empty())).collect();
            let (connection_ready, stdin_ready) = ready[2..].split_at(ids.len());
            (
                ready[0],
                ready[1],
                ids.iter().zip(connection_ready).filter(|(_, r)| **r).map(|(id, _)| *id).collect::<Vec<u64>>(),
                stdins.iter().zip(stdin_ready).filter(|(_, r)| **r).map(|(s, _)| s.0.clone()).collect::<Vec<_>>(),
            )
        };
        for process in &stdin_ready {
            service.pump_stdin(process);
        }
        if signal_ready {
            while let Ok(Some(info)) = signal_fd.read_signal() {
                if info.ssi_signo != Signal::SIGCHLD as u32 {
                    debug!("ignoring signal {}; containerd stops the shim with Shutdown", info.ssi_signo);
                }
            }
            reap(service);
        }
        if listener_ready {
            while let Ok((stream, _)) = listener.accept() {
                connections.insert(next_connection, Connection { stream, pending: Vec::new() });
                next_connection += 1;
            }
        }
        for id in readable {
            let Some(connection) = connections.get_mut(&id) else { continue };
            if !receive(connection) {
                connections.remove(&id);
                held.retain(|w| w.connection != id);
                continue;
            }
            loop {
                let frame = match wire::take_frame(&mut connection.pending) {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(e) => {
                        warn!("closing a connection: {e}");
                        connections.remove(&id);
                        held.retain(|w| w.connection != id);
                        break;
                    }
                };
                if frame.header.type_ != wire::MESSAGE_TYPE_REQUEST {
                    continue;
                }
                match handle(service, &frame.payload) {
                    Outcome::Answer(result) => answer(&mut connection.stream, frame.header.stream_id, result),
                    Outcome::Hold(request) => {
                        held.push(HeldWait { connection: id, stream_id: frame.header.stream_id, request })
                    }
                }
            }
        }
        // Requests may have recorded exits (an exec that ended before its Start returned).
        held.retain(|wait| {
            let Some(connection) = connections.get_mut(&wait.connection) else { return false };
            match service.wait(&wait.request) {
                Ok(None) => true,
                Ok(Some(exit)) => {
                    answer(&mut connection.stream, wait.stream_id, encode(Ok(exit)));
                    false
                }
                Err(e) => {
                    answer(&mut connection.stream, wait.stream_id, Err(e.status()));
                    false
                }
            }
        });
    }
    service.send_events();
    Ok(())
}

/// Reads what has arrived; false when the peer has gone.
fn receive(connection: &mut Connection) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    match connection.stream.read(&mut chunk) {
        Ok(0) => false,
        Ok(n) => {
            connection.pending.extend_from_slice(&chunk[..n]);
            true
        }
        Err(e) => e.kind() == std::io::ErrorKind::Interrupted,
    }
}

fn answer(stream: &mut UnixStream, stream_id: u32, result: Result<Vec<u8>, Status>) {
    let frame = wire::response_frame(stream_id, &wire::response(result));
    if let Err(e) = stream.write_all(&frame) {
        warn!("cannot answer containerd: {e}");
    }
}

/// Reaps every child that has exited and records the exits.
fn reap(service: &TaskService) {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => service.record_exit(pid.as_raw(), code),
            Ok(WaitStatus::Signaled(pid, signal, _)) => service.record_exit(pid.as_raw(), 128 + signal as i32),
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}

/// A task method's result as a response payload: the only place a `ShimError` becomes a
/// ttrpc status.
fn encode<M: Message>(result: Result<M, ShimError>) -> Result<Vec<u8>, Status> {
    match result {
        Ok(reply) => reply.write_to_bytes().map_err(|e| ShimError::Encode(e.to_string()).status()),
        Err(e) => Err(e.status()),
    }
}

/// Decodes one request and calls the task method it names.
fn handle(service: &TaskService, bytes: &[u8]) -> Outcome {
    let request = match Request::parse_from_bytes(bytes) {
        Ok(request) => request,
        Err(e) => {
            return Outcome::Answer(Err(ShimError::BadRequest(format!("unreadable ttrpc request: {e}")).status()))
        }
    };
    if request.service != TASK_SERVICE {
        return Outcome::Answer(Err(ShimError::Unimplemented(format!("service {}", request.service)).status()));
    }
    macro_rules! call {
        ($method:ident, $type:ty) => {
            match <$type>::parse_from_bytes(&request.payload) {
                Ok(req) => Outcome::Answer(encode(service.$method(req))),
                Err(e) => {
                    Outcome::Answer(Err(
                        ShimError::BadRequest(format!("unreadable {} request: {e}", request.method)).status()
                    ))
                }
            }
        };
    }
    match request.method.as_str() {
        "Create" => call!(create, CreateTaskRequest),
        "Start" => call!(start, StartRequest),
        "Delete" => call!(delete, DeleteRequest),
        "Pids" => call!(pids, PidsRequest),
        "Pause" => call!(pause, PauseRequest),
        "Resume" => call!(resume, ResumeRequest),
        "Checkpoint" => call!(checkpoint, CheckpointTaskRequest),
        "Kill" => call!(kill, KillRequest),
        "Exec" => call!(exec, ExecProcessRequest),
        "ResizePty" => call!(resize_pty, ResizePtyRequest),
        "CloseIO" => call!(close_io, CloseIORequest),
        "Update" => call!(update, UpdateTaskRequest),
        "Stats" => call!(stats, StatsRequest),
        "Connect" => call!(connect, ConnectRequest),
        "Shutdown" => call!(shutdown, ShutdownRequest),
        "State" => call!(state, StateRequest),
        "Wait" => match WaitRequest::parse_from_bytes(&request.payload) {
            Ok(req) => match service.wait(&req) {
                Ok(None) => Outcome::Hold(req),
                Ok(Some(exit)) => Outcome::Answer(encode(Ok(exit))),
                Err(e) => Outcome::Answer(Err(e.status())),
            },
            Err(e) => Outcome::Answer(Err(ShimError::BadRequest(format!("unreadable Wait request: {e}")).status())),
        },
        other => Outcome::Answer(Err(ShimError::Unimplemented(other.to_string()).status())),
    }
}
