//! Task events published to containerd, in the order containerd expects, over one ttrpc
//! connection to containerd's event service (no threads of its own). Events are queued as
//! the task service makes them and written once the serving loop has answered what it can;
//! containerd's acknowledgements are read as they arrive, so no answer and no request waits
//! for containerd to take an event (the Go shim sends its events from a queue too).

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused, TaskResumed,
    TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::shim::event::Envelope;
use containerd_shim::protos::shim::events::ForwardRequest;
use containerd_shim::protos::topics::*;
use containerd_shim::protos::ttrpc::{Code, Response};
use log::warn;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::stdio::StdioSpec;
use crate::wire;

/// How long a shim that is shutting down waits for containerd to acknowledge its last events.
const LAST_ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// An event written to containerd and not acknowledged yet.
struct Unacked {
    stream_id: u32,
    topic: &'static str,
    request: Vec<u8>,
}

/// Sends events to containerd's event service; when the connection breaks (containerd
/// restarted), the events it has not acknowledged go again, once, on a fresh connection.
pub struct Events {
    address: String,
    namespace: String,
    connection: RefCell<Option<UnixStream>>,
    /// Bytes of containerd's next, partial acknowledgement.
    received: RefCell<Vec<u8>>,
    next_stream: Cell<u32>,
    /// Encoded Forward requests not written yet, with their topics, oldest first.
    queued: RefCell<Vec<(&'static str, Vec<u8>)>>,
    unacked: RefCell<Vec<Unacked>>,
}

impl Events {
    /// `address` is containerd's ttrpc socket (`TTRPC_ADDRESS`).
    pub fn new(address: &str, namespace: &str) -> Events {
        Events {
            address: address.to_string(),
            namespace: namespace.to_string(),
            connection: RefCell::new(None),
            received: RefCell::new(Vec::new()),
            next_stream: Cell::new(1),
            queued: RefCell::new(Vec::new()),
            unacked: RefCell::new(Vec::new()),
        }
    }

    fn publish<M: Message>(&self, topic: &'static str, event: &M) {
        let mut envelope = Envelope::new();
        envelope.topic = topic.to_string();
        envelope.namespace = self.namespace.clone();
        envelope.timestamp = containerd_shim::util::timestamp().ok().into();
        // The type URL by name: asking the message for its descriptor would build
        // rust-protobuf's reflection tables, a few hundred KB per shim.
        let any = Any {
            type_url: format!("containerd.events.{}", M::NAME),
            value: event.write_to_bytes().unwrap_or_default(),
            ..Default::default()
        };
        envelope.event = Some(any).into();
        let mut forward = ForwardRequest::new();
        forward.envelope = Some(envelope).into();
        match wire::request("containerd.services.events.ttrpc.v1.Events", "Forward", &forward) {
            Ok(request) => self.queued.borrow_mut().push((topic, request)),
            Err(e) => warn!("cannot encode {topic}: {e}"),
        }
    }

    /// Writes the queued events to containerd, in order, without waiting for it.
    pub fn send_queued(&self) {
        let queued = std::mem::take(&mut *self.queued.borrow_mut());
        for (topic, request) in queued {
            if let Err(e) = self.send(topic, request) {
                self.resend_unacked(&e);
            }
        }
    }

    /// The connection to poll for acknowledgements, while one is open.
    pub fn pending_fd(&self) -> Option<RawFd> {
        self.connection.borrow().as_ref().map(|c| c.as_raw_fd())
    }

    /// Reads the acknowledgements that have arrived (the loop found the connection readable).
    pub fn receive_acks(&self) {
        let mut chunk = [0u8; 4096];
        let read = match self.connection.borrow_mut().as_mut() {
            Some(connection) => connection.read(&mut chunk),
            None => return,
        };
        match read {
            Ok(0) => self.resend_unacked("containerd closed the connection"),
            Ok(n) => {
                self.received.borrow_mut().extend_from_slice(&chunk[..n]);
                self.take_acks();
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => self.resend_unacked(&format!("cannot read containerd's answer: {e}")),
        }
    }

    /// Waits (at most `LAST_ACK_TIMEOUT`) until containerd has acknowledged every event,
    /// for a shim about to exit.
    pub fn wait_for_acks(&self) {
        self.send_queued();
        let deadline = Instant::now() + LAST_ACK_TIMEOUT;
        while !self.unacked.borrow().is_empty() {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                warn!("containerd did not acknowledge {} event(s) before the shim exited", self.unacked.borrow().len());
                return;
            };
            let ready = {
                let connection = self.connection.borrow();
                let Some(connection) = connection.as_ref() else { return };
                let mut fds = [PollFd::new(connection.as_fd(), PollFlags::POLLIN)];
                let timeout =
                    PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX);
                poll(&mut fds, timeout)
            };
            match ready {
                Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                Ok(_) => self.receive_acks(),
                Err(e) => {
                    warn!("cannot wait for containerd's acknowledgements: {e}");
                    return;
                }
            }
        }
    }

    /// Writes one event (connecting first when there is no connection) and keeps it until
    /// containerd acknowledges it.
    fn send(&self, topic: &'static str, request: Vec<u8>) -> Result<(), String> {
        let stream_id = self.next_stream.get();
        self.next_stream.set(stream_id + 2); // clients use odd stream ids
        let frame = wire::request_frame(stream_id, &request);
        self.unacked.borrow_mut().push(Unacked { stream_id, topic, request });
        let mut connection = self.connection.borrow_mut();
        if connection.is_none() {
            let fd = containerd_shim::util::connect(self.address.trim_start_matches("unix://"))
                .map_err(|e| format!("cannot connect: {e}"))?;
            // SAFETY: connect returned a new socket descriptor this process owns.
            *connection = Some(unsafe { UnixStream::from_raw_fd(fd) });
            self.received.borrow_mut().clear();
        }
        let Some(stream) = connection.as_mut() else { return Err("no connection".into()) };
        stream.write_all(&frame).map_err(|e| format!("cannot send: {e}"))
    }

    /// The connection broke (`why`): a fresh one, on which every event containerd has not
    /// acknowledged goes again, once; what fails then is dropped with a warning.
    fn resend_unacked(&self, why: &str) {
        self.connection.borrow_mut().take();
        let unacked = std::mem::take(&mut *self.unacked.borrow_mut());
        for (n, event) in unacked.iter().enumerate() {
            if let Err(e) = self.send(event.topic, event.request.clone()) {
                for lost in &unacked[n..] {
                    warn!(
                        "cannot publish {} to containerd at {}: {why}; after reconnecting: {e}",
                        lost.topic, self.address
                    );
                }
                self.connection.borrow_mut().take();
                self.unacked.borrow_mut().clear();
                return;
            }
        }
    }

    /// Matches the whole acknowledgements received so far to their events.
    fn take_acks(&self) {
        loop {
            let taken = wire::take_frame(&mut self.received.borrow_mut());
            let frame = match taken {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(e) => return self.resend_unacked(&format!("unreadable answer: {e}")),
            };
            if frame.header.type_ != wire::MESSAGE_TYPE_RESPONSE {
                continue;
            }
            let mut unacked = self.unacked.borrow_mut();
            let Some(at) = unacked.iter().position(|u| u.stream_id == frame.header.stream_id) else { continue };
            let event = unacked.remove(at);
            match Response::parse_from_bytes(&frame.payload) {
                Ok(response) => match response.status.as_ref() {
                    Some(status) if status.code() != Code::OK => {
                        warn!("containerd refused {}: {}", event.topic, status.message)
                    }
                    _ => {}
                },
                Err(e) => warn!("unreadable answer to {}: {e}", event.topic),
            }
        }
    }

    pub fn create(&self, id: &str, bundle: &str, stdio: &StdioSpec, pid: i32) {
        let mut io = TaskIO::new();
        io.stdin = stdio.stdin.clone();
        io.stdout = stdio.stdout.clone();
        io.stderr = stdio.stderr.clone();
        io.terminal = stdio.terminal;
        let mut event = TaskCreate::new();
        event.container_id = id.to_string();
        event.bundle = bundle.to_string();
        event.io = Some(io).into();
        event.pid = pid as u32;
        self.publish(TASK_CREATE_EVENT_TOPIC, &event);
    }

    pub fn start(&self, id: &str, pid: i32) {
        let mut event = TaskStart::new();
        event.container_id = id.to_string();
        event.pid = pid as u32;
        self.publish(TASK_START_EVENT_TOPIC, &event);
    }

    pub fn exec_added(&self, id: &str, exec_id: &str) {
        let mut event = TaskExecAdded::new();
        event.container_id = id.to_string();
        event.exec_id = exec_id.to_string();
        self.publish(TASK_EXEC_ADDED_EVENT_TOPIC, &event);
    }

    pub fn exec_started(&self, id: &str, exec_id: &str, pid: i32) {
        let mut event = TaskExecStarted::new();
        event.container_id = id.to_string();
        event.exec_id = exec_id.to_string();
        event.pid = pid as u32;
        self.publish(TASK_EXEC_STARTED_EVENT_TOPIC, &event);
    }

    /// `process_id` is the exec id, or the container id for the init.
    pub fn exit(&self, id: &str, process_id: &str, pid: i32, code: u32, at: &Timestamp) {
        let mut event = TaskExit::new();
        event.container_id = id.to_string();
        event.id = process_id.to_string();
        event.pid = pid as u32;
        event.exit_status = code;
        event.exited_at = Some(at.clone()).into();
        self.publish(TASK_EXIT_EVENT_TOPIC, &event);
    }

    pub fn delete(&self, id: &str, pid: i32, code: u32, at: &Timestamp) {
        let mut event = TaskDelete::new();
        event.container_id = id.to_string();
        event.id = id.to_string();
        event.pid = pid as u32;
        event.exit_status = code;
        event.exited_at = Some(at.clone()).into();
        self.publish(TASK_DELETE_EVENT_TOPIC, &event);
    }

    pub fn paused(&self, id: &str) {
        let mut event = TaskPaused::new();
        event.container_id = id.to_string();
        self.publish(TASK_PAUSED_EVENT_TOPIC, &event);
    }

    pub fn resumed(&self, id: &str) {
        let mut event = TaskResumed::new();
        event.container_id = id.to_string();
        self.publish(TASK_RESUMED_EVENT_TOPIC, &event);
    }

    pub fn oom(&self, id: &str) {
        let mut event = TaskOOM::new();
        event.container_id = id.to_string();
        self.publish(TASK_OOM_EVENT_TOPIC, &event);
    }
}
