//! The CNI bin directory the network tests run their chains with, as `make install` fills
//! lib/cni: every plugin a `berth-cni network create` conflist runs is a link to berth-cni
//! (shared by cni-plugins/tests/networks.rs and tests/tests/cni_networks.rs through `#[path]`).

use std::path::Path;

/// Every plugin a `berth-cni network create` conflist (and its IPAM) runs.
pub const CHAIN_PLUGINS: &[&str] = &["bridge", "host-local", "loopback", "portmap", "firewall", "tuning"];

/// Fills `dir` with a link to `berth_cni` per plugin of the chain.
pub fn fill(dir: &Path, berth_cni: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for plugin in CHAIN_PLUGINS {
        std::os::unix::fs::symlink(berth_cni, dir.join(plugin)).unwrap();
    }
}
