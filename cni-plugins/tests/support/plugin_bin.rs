//! A CNI bin directory mixing berth's plugins with the reference's, and one plugin of it
//! called for a container as a runtime calls it (shared by the plugin tests through `#[path]`).
#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};

use berth_cni::exec::run_plugin;
use berth_cni::skel::Args;
use serde_json::Value;

use super::private_netns::REFERENCE_DIR;

/// `/run/NAME` holding bridge, host-local, loopback and portmap: berth's for the kinds in
/// `berth_kinds`, the reference's for the others.
pub fn bin_dir(name: &str, berth_kinds: &[&str]) -> PathBuf {
    let dir = PathBuf::from("/run").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for kind in ["bridge", "host-local", "loopback", "portmap"] {
        let target = if berth_kinds.contains(&kind) {
            PathBuf::from(env!("CARGO_BIN_EXE_berth-cni"))
        } else {
            Path::new(REFERENCE_DIR).join(kind)
        };
        let _ = std::os::unix::fs::symlink(target, dir.join(kind));
    }
    dir
}

/// Runs plugin `kind` of `bin` for container `id` on `eth0` in `netns`; its exit code and output.
pub fn call(bin: &Path, kind: &str, command: &str, id: &str, netns: &str, conf: &Value) -> (i32, Value) {
    let args = Args {
        command: command.into(),
        container_id: id.into(),
        netns: netns.into(),
        ifname: "eth0".into(),
        args: Vec::new(),
        path: vec![bin.display().to_string()],
    };
    run_plugin(&bin.join(kind), &args, conf).unwrap()
}
