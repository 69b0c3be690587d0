//! `unpack`'s options with `docker run`'s names and value forms, one group per concern: each
//! is a clap `Args` struct the CLI flattens into `unpack`, applied to the image config before
//! conversion (what Docker merges into it) or to the runtime spec after it.
//! - `process`: entrypoint, command, environment, user, cwd, terminal, stop signal and timeout;
//! - `resources`: cgroup limits, capabilities, privileged, read-only root, devices;
//! - `init_layer`: the bundle's own hostname, hosts and resolv.conf files (Docker's "init
//!   layer"), with the container's hostname and name, `--add-host` and the `--dns` options;
//! - `network`: `--network`, ports, aliases and links: the network namespace and berth-cni's hooks.

pub mod init_layer;
pub mod network;
pub mod process;
pub mod resources;

pub use init_layer::InitLayerOptions;
pub use network::NetworkOptions;
pub use process::ProcessOptions;
pub use resources::ResourceOptions;

/// Every option group `unpack` takes; `Default` is `unpack` with no options.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub process: ProcessOptions,
    pub resources: ResourceOptions,
    pub init_layer: InitLayerOptions,
    pub network: NetworkOptions,
    /// `-v`, `--mount`, `--tmpfs` (the storage_options module, beside the volumes it makes).
    pub storage: crate::storage_options::StorageOptions,
}
