//! Resource limits through cgroups: memory (with an OOM kill ending in exit 137), pids,
//! cpu shares and quota, read back from the container's cgroup files. The tests print
//! which cgroup layout they ran on; v2 file names are checked where the host is unified.

use std::path::PathBuf;

use berth_tests::fixtures::{container_id, Bundle};
use berth_tests::privilege::require_root;
use berth_tests::runtime::{cgroup_layout, Berth};
use serde_json::json;

/// The file of a v1 controller (or of the unified tree) for a container's cgroup path.
fn cgroup_file(controller: &str, path: &str, file: &str) -> PathBuf {
    let relative = path.trim_start_matches('/');
    if cgroup_layout().starts_with("v2") {
        PathBuf::from("/sys/fs/cgroup").join(relative).join(file)
    } else {
        PathBuf::from("/sys/fs/cgroup").join(controller).join(relative).join(file)
    }
}

/// The v1 controllers berth manages (libcgroups' list); hierarchies of other controllers and
/// named ones are left as they are.
const V1_CONTROLLERS: [&str; 12] = [
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "hugetlb",
    "memory",
    "pids",
    "perf_event",
    "blkio",
    "net_prio",
    "net_cls",
    "freezer",
];

/// Checks a process's /proc/PID/cgroup: every v1 controller berth manages is in `path`,
/// and the common ones are there at all.
fn assert_in_every_hierarchy(process: &str, membership: &str, path: &str) {
    let mut placed = Vec::new();
    for line in membership.lines() {
        let fields: Vec<&str> = line.splitn(3, ':').collect();
        for controller in fields[1].split(',').filter(|c| V1_CONTROLLERS.contains(c)) {
            assert_eq!(fields[2], path, "{process} is outside the container's {controller} cgroup: {membership}");
            placed.push(controller);
        }
    }
    for controller in ["memory", "pids", "cpu", "cpuacct", "freezer", "devices"] {
        assert!(placed.contains(&controller), "no {controller} hierarchy for {process}: {membership}");
    }
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display())).trim().to_string()
}

#[test]
fn limits_appear_in_the_containers_cgroup_files() {
    if !require_root("limits_appear_in_the_containers_cgroup_files") {
        return;
    }
    eprintln!("cgroup layout: {}", cgroup_layout());
    let mut bundle = Bundle::busybox("limits", &["sleep", "300"]);
    bundle.spec["linux"]["resources"] = json!({
        "devices": [{"allow": false, "access": "rwm"}],
        "memory": {"limit": 33554432, "swap": 33554432},
        "pids": {"limit": 20},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000}
    });
    bundle.write_spec();
    let berth = Berth::new("limits");
    let id = container_id("limits");
    berth.ok(&["run", "-d", "-b", bundle.path().to_str().unwrap(), &id]);
    let path = bundle.cgroups_path();
    let pid = berth.state(&id)["pid"].as_i64().unwrap();
    if cgroup_layout().starts_with("v2") {
        assert_eq!(read(cgroup_file("", &path, "memory.max")), "33554432");
        assert_eq!(read(cgroup_file("", &path, "pids.max")), "20");
        assert_eq!(read(cgroup_file("", &path, "cpu.max")), "50000 100000");
        assert!(read(cgroup_file("", &path, "cgroup.procs")).lines().any(|p| p == pid.to_string()));
    } else {
        assert_eq!(read(cgroup_file("memory", &path, "memory.limit_in_bytes")), "33554432");
        assert_eq!(read(cgroup_file("pids", &path, "pids.max")), "20");
        assert_eq!(read(cgroup_file("cpu", &path, "cpu.shares")), "512");
        assert_eq!(read(cgroup_file("cpu", &path, "cpu.cfs_quota_us")), "50000");
        assert_eq!(read(cgroup_file("cpu", &path, "cpu.cfs_period_us")), "100000");
        for controller in ["memory", "pids", "cpu", "freezer"] {
            let procs = read(cgroup_file(controller, &path, "cgroup.procs"));
            assert!(procs.lines().any(|p| p == pid.to_string()), "init {pid} not in the {controller} cgroup: {procs}");
        }
        // As with runc, the container's processes are in its cgroup in every hierarchy the
        // host mounts a controller of: the init, and a process exec'd later (each joins
        // through libcgroups as patched in patches/).
        assert_in_every_hierarchy("the init", &read(PathBuf::from(format!("/proc/{pid}/cgroup"))), &path);
        let exec_membership = berth.ok(&["exec", &id, "cat", "/proc/self/cgroup"]);
        assert_in_every_hierarchy("an exec'd process", &exec_membership, &path);
    }
    berth.ok(&["delete", "-f", &id]);
    assert!(
        !cgroup_file("memory", &path, "").exists() || cgroup_layout().starts_with("v2"),
        "delete left the memory cgroup"
    );
    assert!(!cgroup_file("pids", &path, "").exists(), "delete left the pids cgroup");
}

#[test]
fn allocation_past_the_memory_limit_is_oom_killed_with_137() {
    if !require_root("allocation_past_the_memory_limit_is_oom_killed_with_137") {
        return;
    }
    eprintln!("cgroup layout: {}", cgroup_layout());
    // The shell keeps the whole command substitution in memory: 64 MB against a 16 MB limit.
    let mut bundle =
        Bundle::busybox("oom", &["sh", "-c", "x=$(head -c 64000000 /dev/zero | tr '\\0' a); echo survived"]);
    bundle.spec["linux"]["resources"]["memory"] = json!({"limit": 16777216, "swap": 16777216});
    bundle.write_spec();
    let berth = Berth::new("oom");
    let (code, stdout, _) = berth.run_bundle(bundle.path(), &container_id("oom"));
    assert_eq!(code, 137, "expected an OOM kill, stdout {stdout:?}");
    assert!(!stdout.contains("survived"));

    // The same program under a generous limit completes: the limit is what killed it.
    bundle.spec["linux"]["resources"]["memory"] = json!({"limit": 536870912, "swap": 536870912});
    bundle.write_spec();
    let (code, stdout, _) = berth.run_bundle(bundle.path(), &container_id("oom-ok"));
    assert_eq!((code, stdout.as_str()), (0, "survived\n"));
}

#[test]
fn pids_limit_stops_forks() {
    if !require_root("pids_limit_stops_forks") {
        return;
    }
    let script = "for i in $(seq 20); do sleep 30 & done; echo all-forked";
    let mut bundle = Bundle::busybox("pids", &["sh", "-c", script]);
    bundle.spec["linux"]["resources"]["pids"] = json!({"limit": 8});
    bundle.write_spec();
    let berth = Berth::new("pids");
    let (code, stdout, stderr) = berth.run_bundle(bundle.path(), &container_id("pids"));
    assert_ne!(code, 0);
    assert!(stderr.contains("can't fork"), "{stderr}");
    assert!(!stdout.contains("all-forked"));

    bundle.spec["linux"]["resources"]["pids"] = json!({"limit": 64});
    bundle.write_spec();
    let (code, stdout, _) = berth.run_bundle(bundle.path(), &container_id("pids-ok"));
    assert_eq!((code, stdout.as_str()), (0, "all-forked\n"));
}

#[test]
fn disable_oom_killer_is_applied_and_survives_updates() {
    if !require_root("disable_oom_killer_is_applied_and_survives_updates") {
        return;
    }
    if cgroup_layout().starts_with("v2") {
        eprintln!("cgroup v2 has no OOM killer switch; nothing to check on {}", cgroup_layout());
        return;
    }
    let mut bundle = Bundle::busybox("nooom", &["sleep", "300"]);
    bundle.spec["linux"]["resources"]["memory"] = json!({"limit": 67108864, "disableOOMKiller": true});
    bundle.write_spec();
    let berth = Berth::new("nooom");
    let id = container_id("nooom");
    berth.ok(&["run", "-d", "-b", bundle.path().to_str().unwrap(), &id]);
    let oom_control = || read(cgroup_file("memory", &bundle.cgroups_path(), "memory.oom_control"));
    assert!(oom_control().contains("oom_kill_disable 1"), "{}", oom_control());
    berth.ok(&["update", "--memory", "128m", &id]);
    assert!(oom_control().contains("oom_kill_disable 1"), "an update re-enabled the OOM killer: {}", oom_control());
    let mut update = berth.command(&["update", "-r", "-", &id]).stdin(std::process::Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(
        &mut update.stdin.take().unwrap(),
        br#"{"memory": {"limit": 134217728, "disableOOMKiller": false}}"#,
    )
    .unwrap();
    assert!(update.wait().unwrap().success());
    assert!(oom_control().contains("oom_kill_disable 0"), "{}", oom_control());
    berth.ok(&["delete", "-f", &id]);
}
