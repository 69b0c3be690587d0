//! containerd-shim-berth-v2: a containerd runtime v2 shim (task API v2) that runs
//! containers by calling `berth` through runc's command line.

pub mod container;
pub mod error;
pub mod events;
pub mod metrics;
pub mod process_table;
pub mod rootfs;
pub mod runtime;
pub mod server;
pub mod service;
pub mod stdio;
pub mod task;
pub mod wire;
