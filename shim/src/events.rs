//! Task events published to containerd, in the order containerd expects.

use std::sync::Mutex;

use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused, TaskResumed, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::topics::*;
use containerd_shim::publisher::RemotePublisher;
use log::warn;

use crate::stdio::StdioSpec;

/// Sends events to containerd's event service.
pub struct Events {
    publisher: Mutex<RemotePublisher>,
    namespace: String,
}

impl Events {
    pub fn new(publisher: RemotePublisher, namespace: &str) -> Events {
        Events { publisher: Mutex::new(publisher), namespace: namespace.to_string() }
    }

    fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        let publisher = self.publisher.lock().unwrap();
        if let Err(e) = publisher.publish(Default::default(), topic, &self.namespace, event) {
            warn!("cannot publish {topic}: {e}");
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
        self.publish(TASK_CREATE_EVENT_TOPIC, Box::new(event));
    }

    pub fn start(&self, id: &str, pid: i32) {
        let mut event = TaskStart::new();
        event.container_id = id.to_string();
        event.pid = pid as u32;
        self.publish(TASK_START_EVENT_TOPIC, Box::new(event));
    }

    pub fn exec_added(&self, id: &str, exec_id: &str) {
        let mut event = TaskExecAdded::new();
        event.container_id = id.to_string();
        event.exec_id = exec_id.to_string();
        self.publish(TASK_EXEC_ADDED_EVENT_TOPIC, Box::new(event));
    }

    pub fn exec_started(&self, id: &str, exec_id: &str, pid: i32) {
        let mut event = TaskExecStarted::new();
        event.container_id = id.to_string();
        event.exec_id = exec_id.to_string();
        event.pid = pid as u32;
        self.publish(TASK_EXEC_STARTED_EVENT_TOPIC, Box::new(event));
    }

    /// `process_id` is the exec id, or the container id for the init.
    pub fn exit(&self, id: &str, process_id: &str, pid: i32, code: u32, at: &Timestamp) {
        let mut event = TaskExit::new();
        event.container_id = id.to_string();
        event.id = process_id.to_string();
        event.pid = pid as u32;
        event.exit_status = code;
        event.exited_at = Some(at.clone()).into();
        self.publish(TASK_EXIT_EVENT_TOPIC, Box::new(event));
    }

    pub fn delete(&self, id: &str, pid: i32, code: u32, at: &Timestamp) {
        let mut event = TaskDelete::new();
        event.container_id = id.to_string();
        event.id = id.to_string();
        event.pid = pid as u32;
        event.exit_status = code;
        event.exited_at = Some(at.clone()).into();
        self.publish(TASK_DELETE_EVENT_TOPIC, Box::new(event));
    }

    pub fn paused(&self, id: &str) {
        let mut event = TaskPaused::new();
        event.container_id = id.to_string();
        self.publish(TASK_PAUSED_EVENT_TOPIC, Box::new(event));
    }

    pub fn resumed(&self, id: &str) {
        let mut event = TaskResumed::new();
        event.container_id = id.to_string();
        self.publish(TASK_RESUMED_EVENT_TOPIC, Box::new(event));
    }

    pub fn oom(&self, id: &str) {
        let mut event = TaskOOM::new();
        event.container_id = id.to_string();
        self.publish(TASK_OOM_EVENT_TOPIC, Box::new(event));
    }
}
