//! The container state as runc prints it for `state` and `list --format json`.

use std::collections::HashMap;
use std::path::PathBuf;

use libcontainer::container::{Container, ContainerStatus};
use serde::Serialize;

use crate::store::Record;

/// runc's state JSON: pid 0 once stopped, lower-case status, RFC 3339 creation time.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StateJson {
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: &'static str,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<HashMap<String, String>>,
    pub owner: String,
}

impl StateJson {
    pub fn new(container: &Container, record: &Record, owner: String) -> StateJson {
        let status = container.status();
        let pid = match status {
            ContainerStatus::Stopped => 0,
            _ => container.pid().map(|p| p.as_raw()).unwrap_or(0),
        };
        StateJson {
            oci_version: container.state.oci_version.clone(),
            id: container.id().to_string(),
            pid,
            status: status_name(status),
            bundle: container.bundle().clone(),
            rootfs: record.rootfs.clone(),
            created: container
                .created()
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
                .unwrap_or_default(),
            annotations: container.state.annotations.clone().filter(|a| !a.is_empty()),
            owner,
        }
    }
}

/// The status word runc uses.
pub fn status_name(status: ContainerStatus) -> &'static str {
    match status {
        ContainerStatus::Creating => "creating",
        ContainerStatus::Created => "created",
        ContainerStatus::Running => "running",
        ContainerStatus::Stopped => "stopped",
        ContainerStatus::Paused => "paused",
    }
}
