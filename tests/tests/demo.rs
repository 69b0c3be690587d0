//! `make demo` (tests/demo.sh) run with the workspace's binaries, so the demo cannot rot:
//! its web page answers through the published port and by name, the named volume's data
//! outlives the replaced container, and nothing it made is left once it ends.

use std::path::Path;
use std::process::Command;

use berth_tests::bins::{bin, bin_dir};
use berth_tests::privilege::require_root;

const TEST: &str = "make_demo_serves_by_port_and_name_and_keeps_the_volume_across_replace";

#[test]
fn make_demo_serves_by_port_and_name_and_keeps_the_volume_across_replace() {
    if !require_root(TEST) {
        return;
    }
    for program in ["berth", "berth-image", "berth-cni"] {
        bin(program); // says how to build it when it is missing
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo.sh");
    let child = Command::new("sh")
        .arg(&script)
        .env("BERTH_BIN_DIR", bin_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cannot run sh tests/demo.sh");
    // The demo names its containers after its own pid (the shell's, kept through unshare).
    let run = child.id();
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "make demo failed:\n{text}");

    for line in [
        "through the port: hello from the berth demo image",
        "by name: hello from the berth demo image",
        "note through the port: written while web-1 ran",
        "serve: SIGTERM, stopping httpd",
        "page through the port: hello from the berth demo image",
        "kept in the volume: written while web-1 ran",
        "by name from client: written while web-1 ran",
        "make demo: done",
    ] {
        assert!(
            text.lines().any(|l| l.trim_start_matches("   | ") == line),
            "make demo did not print {line:?}:\n{text}"
        );
    }
    assert!(text.contains("web-1 stopped after"), "make demo did not stop web-1:\n{text}");

    // The containers' cgroups are the machine's: the demo must have removed them.
    let left = cgroups_named_after(&["web-1", "web-2", "client"].map(|id| format!("{id}-{run}")));
    assert!(left.is_empty(), "make demo left cgroups behind: {left:?}");
}

/// Cgroups (at the top of /sys/fs/cgroup or of one of its hierarchies) whose names end with
/// one of `ids`, as berth names a container's cgroup when its config gives no cgroupsPath.
fn cgroups_named_after(ids: &[String]) -> Vec<std::path::PathBuf> {
    let entries = |dir: &Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default()
    };
    let mut found = Vec::new();
    for top in entries(Path::new("/sys/fs/cgroup")) {
        for path in std::iter::once(top.clone()).chain(entries(&top)) {
            let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
            if path.is_dir() && ids.iter().any(|id| name.ends_with(id.as_str())) {
                found.push(path);
            }
        }
    }
    found
}
