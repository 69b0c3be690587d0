//! Shared support for berth's end-to-end tests and bench harness: where the binaries are,
//! fixtures the tests build themselves, and guards for privileged tests.

pub mod bench;
pub mod bench_cni;
pub mod bench_cni_chain;
pub mod bench_cri;
pub mod bench_cri_trace;
pub mod bench_docker;
pub mod bench_image;
pub mod bench_runtime;
pub mod bench_shim;
pub mod bins;
pub mod cni_dirs;
pub mod containerd;
pub mod cri_client;
pub mod cri_node;
pub mod fixtures;
pub mod image_store;
pub mod oci_image;
pub mod peak_rss;
/// The CNI bin directory `make install` would fill, shared with cni-plugins' tests.
#[path = "../../cni-plugins/tests/support/plugin_dir.rs"]
pub mod plugin_dir;
pub mod podman;
pub mod private_namespaces;
pub mod privilege;
pub mod pty;
pub mod runtime;
