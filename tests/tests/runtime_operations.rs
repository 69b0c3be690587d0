//! Operations on running containers as runc's callers use them: exec, ps, pause/resume,
//! update, events, features, and checkpoint/restore's answer on a host where CRIU fails.

use std::io::Write;
use std::process::Stdio;

use berth_tests::fixtures::{container_id, Bundle, TempDir};
use berth_tests::privilege::require_root;
use berth_tests::runtime::{cgroup_layout, Berth};
use serde_json::{json, Value};

fn running(name: &str) -> (Bundle, Berth, String) {
    let bundle = Bundle::busybox(name, &["sleep", "300"]);
    let berth = Berth::new(name);
    let id = container_id(name);
    berth.ok(&["run", "-d", "-b", bundle.path().to_str().unwrap(), &id]);
    (bundle, berth, id)
}

fn v1_file(controller: &str, bundle: &Bundle, file: &str) -> String {
    let path = format!("/sys/fs/cgroup/{controller}{}/{file}", bundle.cgroups_path());
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")).trim().to_string()
}

#[test]
fn exec_runs_processes_from_flags_and_process_files() {
    if !require_root("exec_runs_processes_from_flags_and_process_files") {
        return;
    }
    let (bundle, berth, id) = running("exec");
    let out = berth.output(&["exec", "-e", "GREETING=hi", "--cwd", "/tmp", "-u", "1000:1000", &id, "sh", "-c", "echo $GREETING $(pwd) $(id -u) $$; exit 5"]);
    assert_eq!(out.status.code(), Some(5));
    let text = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(fields[..3], ["hi", "/tmp", "1000"], "{text}");
    assert_ne!(fields[3], "1", "exec'd process is not the init");

    let process = TempDir::new("berth-process");
    let file = process.path().join("process.json");
    std::fs::write(&file, serde_json::to_vec(&json!({
        "terminal": false, "user": {"uid": 0, "gid": 0}, "cwd": "/", "args": ["sh", "-c", "echo from-file $VIA"],
        "env": ["PATH=/bin", "VIA=process-json"]
    })).unwrap()).unwrap();
    assert_eq!(berth.ok(&["exec", "--process", file.to_str().unwrap(), &id]), "from-file process-json\n");

    let pid_file = process.path().join("exec.pid");
    berth.ok(&["exec", "-d", "--pid-file", pid_file.to_str().unwrap(), &id, "sleep", "200"]);
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    let pids: Vec<i32> = serde_json::from_str(&berth.ok(&["ps", "--format", "json", &id])).unwrap();
    assert!(pids.contains(&pid), "detached exec {pid} not among the container's processes {pids:?}");
    assert_eq!(pids.len(), 2);

    let table = berth.ok(&["ps", &id]);
    assert!(table.lines().next().unwrap().contains("PID"));
    assert!(table.contains("sleep 200") && table.contains("sleep 300"), "{table}");
    assert_eq!(table.lines().count(), 3, "{table}");
    let _ = bundle;
}

#[test]
fn exec_into_a_stopped_container_is_refused() {
    if !require_root("exec_into_a_stopped_container_is_refused") {
        return;
    }
    let (_bundle, berth, id) = running("execstopped");
    berth.ok(&["kill", &id, "KILL"]);
    berth.wait_status(&id, "stopped");
    let err = berth.fails(&["exec", &id, "true"]);
    assert!(err.contains("container not running"), "{err}");
    let err = berth.fails(&["exec", "ghost", "true"]);
    assert!(err.contains("container does not exist"), "{err}");
}

#[test]
fn pause_freezes_and_resume_thaws() {
    if !require_root("pause_freezes_and_resume_thaws") {
        return;
    }
    let (bundle, berth, id) = running("pause");
    berth.ok(&["pause", &id]);
    assert_eq!(berth.state(&id)["status"], "paused");
    if !cgroup_layout().starts_with("v2") {
        assert_eq!(v1_file("freezer", &bundle, "freezer.state"), "FROZEN");
    }
    let err = berth.fails(&["pause", &id]);
    assert!(err.contains("container not running"), "{err}");
    berth.ok(&["resume", &id]);
    assert_eq!(berth.state(&id)["status"], "running");
    if !cgroup_layout().starts_with("v2") {
        assert_eq!(v1_file("freezer", &bundle, "freezer.state"), "THAWED");
    }
    let err = berth.fails(&["resume", &id]);
    assert!(err.contains("container not paused"), "{err}");
}

#[test]
fn update_changes_limits_from_flags_and_stdin() {
    if !require_root("update_changes_limits_from_flags_and_stdin") {
        return;
    }
    if cgroup_layout().starts_with("v2") {
        eprintln!("update checks v1 files; this host is {}", cgroup_layout());
    }
    let (bundle, berth, id) = running("update");
    berth.ok(&["update", "--memory", "64m", "--memory-swap", "64m", "--pids-limit", "42", "--cpu-share", "300", "--cpu-quota", "20000", "--cpu-period", "100000", &id]);
    if !cgroup_layout().starts_with("v2") {
        assert_eq!(v1_file("memory", &bundle, "memory.limit_in_bytes"), (64u64 << 20).to_string());
        assert_eq!(v1_file("pids", &bundle, "pids.max"), "42");
        assert_eq!(v1_file("cpu", &bundle, "cpu.shares"), "300");
        assert_eq!(v1_file("cpu", &bundle, "cpu.cfs_quota_us"), "20000");
    }
    let mut child = berth.command(&["update", "--resources", "-", &id]).stdin(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(br#"{"pids": {"limit": 17}, "memory": {"limit": 100663296, "swap": 100663296}}"#).unwrap();
    assert!(child.wait().unwrap().success());
    if !cgroup_layout().starts_with("v2") {
        assert_eq!(v1_file("pids", &bundle, "pids.max"), "17");
        assert_eq!(v1_file("memory", &bundle, "memory.limit_in_bytes"), "100663296");
    }
    let err = berth.fails(&["update", "--memory", "lots", &id]);
    assert!(err.contains("invalid size"), "{err}");
}

#[test]
fn events_stats_prints_runcs_shape() {
    if !require_root("events_stats_prints_runcs_shape") {
        return;
    }
    let (_bundle, berth, id) = running("events");
    let event: Value = serde_json::from_str(berth.ok(&["events", "--stats", &id]).trim()).unwrap();
    assert_eq!(event["type"], "stats");
    assert_eq!(event["id"], id.as_str());
    assert!(event["data"]["memory"]["usage"]["usage"].as_u64().unwrap() > 0, "{event}");
    assert_eq!(event["data"]["pids"]["current"], 1);
    assert!(event["data"]["cpu"]["usage"]["total"].as_u64().is_some());

    // The stream prints every interval and ends when the container stops.
    let mut stream = berth.command(&["events", "--interval", "100ms", &id]).stdout(Stdio::piped()).spawn().unwrap();
    let mut reader = std::io::BufReader::new(stream.stdout.take().unwrap());
    for _ in 0..2 {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&line).unwrap()["type"], "stats");
    }
    berth.ok(&["kill", &id, "KILL"]);
    assert!(stream.wait().unwrap().success());
}

#[test]
fn features_document_matches_what_berth_does() {
    let berth = Berth::new("features");
    let doc: Value = serde_json::from_str(&berth.ok(&["features"])).unwrap();
    assert_eq!(doc["ociVersionMax"], "1.1.0");
    assert_eq!(doc["hooks"].as_array().unwrap().len(), 6);
    let namespaces: Vec<&str> = doc["linux"]["namespaces"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    assert_eq!(namespaces, ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"]);
    assert!(doc["linux"]["capabilities"].as_array().unwrap().iter().any(|c| c == "CAP_SYS_ADMIN"));
    assert_eq!(doc["linux"]["seccomp"]["enabled"], true);
    // Checkpointing is advertised exactly when `criu check` passes here.
    let criu_ok = std::process::Command::new("criu").arg("check").output().map(|o| o.status.success()).unwrap_or(false);
    assert_eq!(doc["annotations"]["org.opencontainers.runc.checkpoint.enabled"], criu_ok.to_string());
}

#[test]
fn seccomp_profiles_are_enforced() {
    if !require_root("seccomp_profiles_are_enforced") {
        return;
    }
    let mut bundle = Bundle::busybox("seccomp", &["sh", "-c", "mkdir /tmp/blocked 2>&1; echo mkdir=$?; touch /tmp/allowed && echo touch=ok"]);
    bundle.spec["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
    });
    bundle.write_spec();
    let berth = Berth::new("seccomp");
    let (code, stdout, _) = berth.run_bundle(bundle.path(), &container_id("seccomp"));
    assert_eq!(code, 0);
    assert!(stdout.contains("Operation not permitted") && stdout.contains("mkdir=1"), "{stdout}");
    assert!(stdout.contains("touch=ok"), "{stdout}");
}

#[test]
fn checkpoint_and_restore_report_criu_when_it_cannot_work() {
    if !require_root("checkpoint_and_restore_report_criu_when_it_cannot_work") {
        return;
    }
    let check = std::process::Command::new("criu").arg("check").output();
    let Ok(check) = check else {
        berth_tests::privilege::missing("checkpoint_and_restore_report_criu_when_it_cannot_work", "Debian's criu");
        return;
    };
    let (_bundle, berth, id) = running("criu");
    let images = TempDir::new("berth-criu-images");
    if check.status.success() {
        eprintln!("criu check passes on this host: checkpointing {id}");
        berth.ok(&["checkpoint", "--image-path", images.path().to_str().unwrap(), &id]);
        return;
    }
    let err = berth.fails(&["checkpoint", "--image-path", images.path().to_str().unwrap(), &id]);
    assert!(err.contains("`criu check` fails on this host"), "{err}");
    assert_eq!(berth.state(&id)["status"], "running", "a refused checkpoint must not touch the container");
    let err = berth.fails(&["restore", "--image-path", images.path().to_str().unwrap(), "-b", "/tmp", &id]);
    assert!(err.contains("`criu check` fails on this host"), "{err}");
}
