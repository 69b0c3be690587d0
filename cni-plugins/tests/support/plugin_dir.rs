//! The CNI bin directory the network tests run their chains with (shared by
//! cni-plugins/tests/networks.rs and tests/tests/cni_networks.rs through `#[path]`).

use std::path::Path;

// ===================================================================================
// THE ONE PLACE that decides which plugins of the chain are berth's.
// portmap, firewall and tuning are written on other branches of issue 13; until they are
// merged, Debian's reference binaries in /usr/lib/cni stand in for them. After the merge,
// add "portmap", "firewall" and "tuning" to BERTH_PLUGINS (then every plugin is berth-cni).
// ===================================================================================
pub const BERTH_PLUGINS: &[&str] = &["bridge", "host-local", "loopback", "firewall", "tuning"];

/// Every plugin a `berth-cni network create` conflist (and its IPAM) runs.
pub const CHAIN_PLUGINS: &[&str] = &["bridge", "host-local", "loopback", "portmap", "firewall", "tuning"];

/// Where the stand-ins come from.
pub const REFERENCE_DIR: &str = "/usr/lib/cni";

/// Fills `dir` as `make install` fills lib/cni: a link to `berth_cni` per plugin of
/// BERTH_PLUGINS, a link to the reference binary for the others.
pub fn fill(dir: &Path, berth_cni: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for plugin in CHAIN_PLUGINS {
        let target = if BERTH_PLUGINS.contains(plugin) {
            berth_cni.to_path_buf()
        } else {
            Path::new(REFERENCE_DIR).join(plugin)
        };
        assert!(target.exists(), "{} is missing (make deps installs containernetworking-plugins)", target.display());
        std::os::unix::fs::symlink(&target, dir.join(plugin)).unwrap();
    }
}
