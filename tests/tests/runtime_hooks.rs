//! runtime-spec hooks: all six kinds run at their lifecycle points, in order, with the
//! state on stdin; a failing poststop hook only warns, any other failing hook fails the
//! operation and leaves nothing behind.

use std::path::Path;

use berth_tests::fixtures::{container_id, Bundle, TempDir};
use berth_tests::privilege::require_root;
use berth_tests::runtime::Berth;
use serde_json::{json, Value};

/// A hook that appends its kind to `log` (a path in the namespace it runs in).
fn logging_hook(kind: &str, log: &str) -> Value {
    json!({"path": "/bin/sh", "args": ["sh", "-c", format!("echo {kind} >> {log}")]})
}

fn failing_hook() -> Value {
    json!({"path": "/bin/sh", "args": ["sh", "-c", "echo hook failed on purpose >&2; exit 3"]})
}

/// A bundle whose runtime-namespace hooks log to `shared/log`, and whose container-namespace
/// hooks log through the container's bind mount of `shared` at /hooklog: createContainer
/// runs before pivot_root (its path resolves in the runtime namespace, so it writes to
/// `<rootfs>/hooklog/log`, which reaches `shared` only inside the container's mount
/// namespace); startContainer runs inside the container's root.
fn hooked_bundle(name: &str, shared: &Path) -> Bundle {
    let mut bundle = Bundle::busybox(name, &["sh", "-c", "echo process >> /hooklog/log"]);
    std::fs::create_dir(bundle.rootfs().join("hooklog")).unwrap();
    bundle.spec["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/hooklog", "type": "bind", "source": shared, "options": ["rbind", "rw"]}));
    let host_log = shared.join("log");
    let host_log = host_log.to_str().unwrap();
    bundle.spec["hooks"] = json!({
        "prestart": [logging_hook("prestart", host_log)],
        "createRuntime": [
            logging_hook("createRuntime", host_log),
            {"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}/state.json", shared.display())]}
        ],
        "createContainer": [logging_hook("createContainer", &format!("{}/hooklog/log", bundle.rootfs().display()))],
        "startContainer": [logging_hook("startContainer", "/hooklog/log")],
        "poststart": [logging_hook("poststart", host_log)],
        "poststop": [logging_hook("poststop", host_log)]
    });
    bundle.write_spec();
    bundle
}

fn log_lines(shared: &Path) -> Vec<String> {
    std::fs::read_to_string(shared.join("log")).unwrap_or_default().lines().map(String::from).collect()
}

#[test]
fn all_six_hook_kinds_run_in_order_with_state_on_stdin() {
    if !require_root("all_six_hook_kinds_run_in_order_with_state_on_stdin") {
        return;
    }
    let shared = TempDir::new("berth-hooks");
    let bundle = hooked_bundle("hooks", shared.path());
    let berth = Berth::new("hooks");
    let id = container_id("hooks");
    let bundle_path = bundle.path().to_str().unwrap();
    berth.ok(&["create", "-b", bundle_path, &id]);
    assert_eq!(log_lines(shared.path()), ["prestart", "createRuntime", "createContainer"]);
    let state: Value = serde_json::from_slice(&std::fs::read(shared.path().join("state.json")).unwrap()).unwrap();
    assert_eq!(state["id"], id.as_str());
    assert_eq!(state["bundle"], bundle_path);
    assert_eq!(state["status"], "creating");
    assert_eq!(state["pid"], berth.state(&id)["pid"]);

    berth.ok(&["start", &id]);
    berth.wait_status(&id, "stopped");
    berth.ok(&["delete", &id]);
    let lines = log_lines(shared.path());
    assert_eq!(lines.len(), 7, "{lines:?}");
    assert_eq!(lines[..4], ["prestart", "createRuntime", "createContainer", "startContainer"], "{lines:?}");
    // The process and the poststart hooks run concurrently once the process has begun.
    let mut middle = lines[4..6].to_vec();
    middle.sort();
    assert_eq!(middle, ["poststart", "process"], "{lines:?}");
    assert_eq!(lines[6], "poststop", "{lines:?}");
}

/// Asserts that nothing of a failed container is left: no state, no cgroup, no process.
fn assert_nothing_left(berth: &Berth, bundle: &Bundle) {
    assert_eq!(berth.ok(&["list", "-q"]), "", "a container is still listed");
    let leftovers: Vec<_> = std::fs::read_dir(berth.root()).unwrap().collect();
    assert!(leftovers.is_empty(), "state left under the root: {leftovers:?}");
    let relative = bundle.cgroups_path().trim_start_matches('/').to_string();
    for mount in berth_tests::runtime::cgroup_mounts() {
        assert!(!mount.join(&relative).exists(), "cgroup {} left behind", mount.join(&relative).display());
    }
    let rootfs = std::fs::canonicalize(bundle.rootfs()).unwrap();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(root) = std::fs::read_link(entry.path().join("root")) {
            assert_ne!(root, rootfs, "process {:?} still runs in the container's rootfs", entry.file_name());
        }
    }
}

#[test]
fn a_failing_create_time_hook_fails_create_and_leaves_nothing() {
    if !require_root("a_failing_create_time_hook_fails_create_and_leaves_nothing") {
        return;
    }
    for kind in ["prestart", "createRuntime", "createContainer"] {
        let shared = TempDir::new("berth-hookfail");
        let mut bundle = hooked_bundle(&format!("hookfail-{kind}"), shared.path());
        bundle.spec["hooks"][kind] = json!([failing_hook()]);
        bundle.write_spec();
        let berth = Berth::new("hookfail");
        let id = container_id("hookfail");
        let err = berth.fails(&["create", "-b", bundle.path().to_str().unwrap(), &id]);
        assert!(err.contains(&format!("cannot create container {id}")), "{kind}: {err}");
        assert_nothing_left(&berth, &bundle);
    }
}

#[test]
fn a_failing_poststart_hook_fails_start_and_leaves_nothing() {
    if !require_root("a_failing_poststart_hook_fails_start_and_leaves_nothing") {
        return;
    }
    let shared = TempDir::new("berth-hookfail-start");
    let mut bundle = hooked_bundle("hookstart", shared.path());
    bundle.set_args(&["sleep", "300"]);
    bundle.spec["hooks"]["poststart"] = json!([failing_hook()]);
    bundle.write_spec();
    let berth = Berth::new("hookstart");
    let id = container_id("hookstart");
    berth.ok(&["create", "-b", bundle.path().to_str().unwrap(), &id]);
    let err = berth.fails(&["start", &id]);
    assert!(err.contains(&format!("cannot start container {id}")), "{err}");
    assert!(!berth.output(&["state", &id]).status.success(), "the container survived its failed start");
    assert_nothing_left(&berth, &bundle);
}

#[test]
fn a_failing_start_container_hook_stops_the_container_before_its_process() {
    if !require_root("a_failing_start_container_hook_stops_the_container_before_its_process") {
        return;
    }
    // As in runc, startContainer runs in the container after `start` has handed over, so
    // `start` itself succeeds; the user process never runs and the container stops.
    let shared = TempDir::new("berth-hookfail-sc");
    let mut bundle = hooked_bundle("hooksc", shared.path());
    bundle.spec["hooks"]["startContainer"] = json!([failing_hook()]);
    bundle.write_spec();
    let berth = Berth::new("hooksc");
    let id = container_id("hooksc");
    berth.ok(&["create", "-b", bundle.path().to_str().unwrap(), &id]);
    berth.ok(&["start", &id]);
    assert_eq!(berth.wait_status(&id, "stopped")["pid"], 0);
    assert!(!log_lines(shared.path()).contains(&"process".to_string()), "the process ran despite the failed hook");
    berth.ok(&["delete", &id]);
    assert_nothing_left(&berth, &bundle);
}

#[test]
fn a_failing_poststop_hook_warns_and_delete_completes() {
    if !require_root("a_failing_poststop_hook_warns_and_delete_completes") {
        return;
    }
    let shared = TempDir::new("berth-poststop");
    let mut bundle = hooked_bundle("poststop", shared.path());
    let host_log = shared.path().join("log");
    bundle.spec["hooks"]["poststop"] =
        json!([failing_hook(), logging_hook("poststop-after-failure", host_log.to_str().unwrap())]);
    bundle.write_spec();
    let berth = Berth::new("poststop");
    let id = container_id("poststop");
    let (code, _, stderr) = berth.run_bundle(bundle.path(), &id);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("poststop hook /bin/sh") && stderr.contains("failed"), "{stderr}");
    assert_eq!(log_lines(shared.path()).last().map(String::as_str), Some("poststop-after-failure"));
    assert_nothing_left(&berth, &bundle);
}
