//! Task events published to containerd, in the order containerd expects, over a
//! synchronous ttrpc connection to containerd's event service (no threads of its own).
//! Events are queued as the task service makes them and sent once the serving loop has
//! answered what it can, so no answer waits for containerd to take an event (the Go shim
//! sends its events from a queue too).

use std::cell::RefCell;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

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

use crate::stdio::StdioSpec;
use crate::wire;

/// How long containerd may take to acknowledge one event.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends events to containerd's event service; reconnects once when containerd restarted.
pub struct Events {
    address: String,
    namespace: String,
    connection: RefCell<Option<UnixStream>>,
    next_stream: RefCell<u32>,
    /// Encoded Forward requests not sent yet, with their topics, oldest first.
    queued: RefCell<Vec<(&'static str, Vec<u8>)>>,
}

impl Events {
    /// `address` is containerd's ttrpc socket (`TTRPC_ADDRESS`).
    pub fn new(address: &str, namespace: &str) -> Events {
        Events {
            address: address.to_string(),
            namespace: namespace.to_string(),
            connection: RefCell::new(None),
            next_stream: RefCell::new(1),
            queued: RefCell::new(Vec::new()),
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

    /// Sends the queued events to containerd, in order.
    pub fn send_queued(&self) {
        let queued = std::mem::take(&mut *self.queued.borrow_mut());
        for (topic, request) in queued {
            let sent = self.forward(&request).or_else(|first| {
                // containerd may have restarted since the last event: one fresh connection.
                self.connection.borrow_mut().take();
                self.forward(&request).map_err(|again| format!("{first}; after reconnecting: {again}"))
            });
            if let Err(e) = sent {
                warn!("cannot publish {topic} to containerd at {}: {e}", self.address);
            }
        }
    }

    /// Sends one Forward request and waits for its response.
    fn forward(&self, request: &[u8]) -> Result<(), String> {
        let mut connection = self.connection.borrow_mut();
        if connection.is_none() {
            let fd = containerd_shim::util::connect(self.address.trim_start_matches("unix://"))
                .map_err(|e| format!("cannot connect: {e}"))?;
            // SAFETY: connect returned a new socket descriptor this process owns.
            let stream = unsafe { UnixStream::from_raw_fd(fd) };
            stream.set_read_timeout(Some(FORWARD_TIMEOUT)).map_err(|e| e.to_string())?;
            *connection = Some(stream);
        }
        let Some(stream) = connection.as_mut() else { return Err("no connection".into()) };
        let stream_id = {
            let mut next = self.next_stream.borrow_mut();
            let id = *next;
            *next += 2; // clients use odd stream ids
            id
        };
        stream.write_all(&wire::request_frame(stream_id, request)).map_err(|e| format!("cannot send: {e}"))?;
        loop {
            let frame = wire::read_frame(stream).map_err(|e| format!("no answer: {e}"))?;
            if frame.header.stream_id != stream_id || frame.header.type_ != wire::MESSAGE_TYPE_RESPONSE {
                continue;
            }
            let response = Response::parse_from_bytes(&frame.payload).map_err(|e| format!("unreadable answer: {e}"))?;
            return match response.status.as_ref() {
                Some(status) if status.code() != Code::OK => Err(format!("containerd refused it: {}", status.message)),
                _ => Ok(()),
            };
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
