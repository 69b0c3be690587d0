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
    let out = berth.output(&[
        "exec",
        "-e",
        "GREETING=hi",
        "--cwd",
        "/tmp",
        "-u",
        "1000:1000",
        &id,
        "sh",
        "-c",
        "echo $GREETING $(pwd) $(id -u) $$; exit 5",
    ]);
    assert_eq!(out.status.code(), Some(5));
    let text = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(fields[..3], ["hi", "/tmp", "1000"], "{text}");
    assert_ne!(fields[3], "1", "exec'd process is not the init");

    let process = TempDir::new("berth-process");
    let file = process.path().join("process.json");
    std::fs::write(
        &file,
        serde_json::to_vec(&json!({
            "terminal": false, "user": {"uid": 0, "gid": 0}, "cwd": "/", "args": ["sh", "-c", "echo from-file $VIA"],
            "env": ["PATH=/bin", "VIA=process-json"]
        }))
        .unwrap(),
    )
    .unwrap();
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
    berth.ok(&[
        "update",
        "--memory",
        "64m",
        "--memory-swap",
        "64m",
        "--pids-limit",
        "42",
        "--cpu-share",
        "300",
        "--cpu-quota",
        "20000",
        "--cpu-period",
        "100000",
        &id,
    ]);
    if !cgroup_layout().starts_with("v2") {
        assert_eq!(v1_file("memory", &bundle, "memory.limit_in_bytes"), (64u64 << 20).to_string());
        assert_eq!(v1_file("pids", &bundle, "pids.max"), "42");
        assert_eq!(v1_file("cpu", &bundle, "cpu.shares"), "300");
        assert_eq!(v1_file("cpu", &bundle, "cpu.cfs_quota_us"), "20000");
    }
    let mut child = berth.command(&["update", "--resources", "-", &id]).stdin(Stdio::piped()).spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"pids": {"limit": 17}, "memory": {"limit": 100663296, "swap": 100663296}}"#)
        .unwrap();
    assert!(child.wait().unwrap().success());
    if !cgroup_layout().starts_with("v2") {
        assert_eq!(v1_file("pids", &bundle, "pids.max"), "17");
        assert_eq!(v1_file("memory", &bundle, "memory.limit_in_bytes"), "100663296");
    }
    let err = berth.fails(&["update", "--memory", "lots", &id]);
    assert!(err.contains("invalid size"), "{err}");

    // The remaining single-value flags: each takes effect, or is refused saying why.
    berth.ok(&[
        "update",
        "--cpuset-cpus",
        "0",
        "--cpuset-mems",
        "0",
        "--memory-reservation",
        "32m",
        "--cpu-rt-period",
        "1000000",
        "--cpu-rt-runtime",
        "1000",
        &id,
    ]);
    if !cgroup_layout().starts_with("v2") {
        assert_eq!(v1_file("cpuset", &bundle, "cpuset.cpus"), "0");
        assert_eq!(v1_file("cpuset", &bundle, "cpuset.mems"), "0");
        assert_eq!(v1_file("memory", &bundle, "memory.soft_limit_in_bytes"), (32u64 << 20).to_string());
        assert_eq!(v1_file("cpu", &bundle, "cpu.rt_runtime_us"), "1000");
        let weight_file = ["blkio.weight", "blkio.bfq.weight"]
            .iter()
            .any(|f| std::path::Path::new("/sys/fs/cgroup/blkio").join(f).exists());
        let out = berth.output(&["update", "--blkio-weight", "500", &id]);
        if weight_file {
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        } else {
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("has no weight file"),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let out = berth.output(&["update", "--kernel-memory", "64m", "--kernel-memory-tcp", "64m", &id]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("kernel memory limits are deprecated"));
    let err = berth.fails(&["update", "--l3-cache-schema", "L3:0=f", &id]);
    assert!(err.contains("Intel RDT"), "{err}");
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
    let namespaces: Vec<&str> =
        doc["linux"]["namespaces"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
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
    let mut bundle = Bundle::busybox(
        "seccomp",
        &["sh", "-c", "mkdir /tmp/blocked 2>&1; echo mkdir=$?; touch /tmp/allowed && echo touch=ok"],
    );
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
fn exec_processes_run_under_the_containers_seccomp_profile() {
    if !require_root("exec_processes_run_under_the_containers_seccomp_profile") {
        return;
    }
    let mut bundle = Bundle::busybox("seccomp-exec", &["sleep", "300"]);
    bundle.spec["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
    });
    // Written out, as hand-made configs do (containerd and podman leave it unset).
    bundle.spec["process"]["noNewPrivileges"] = json!(false);
    bundle.write_spec();
    let berth = Berth::new("seccomp-exec");
    let id = container_id("seccomp-exec");
    berth.ok(&["run", "-d", "-b", bundle.path().to_str().unwrap(), &id]);
    let script = "mkdir /tmp/blocked 2>&1; echo mkdir=$?; grep -E '^(Seccomp|NoNewPrivs|CapBnd|CapEff|CapPrm):' /proc/self/status";
    // Without CAP_SYS_ADMIN (the bundle's capabilities lack it) the process is filtered too,
    // with no no_new_privs it did not ask for, and nothing lent to load the filter is left.
    let out = berth.ok(&["exec", &id, "sh", "-c", script]);
    assert!(out.contains("mkdir=1") && out.contains("Operation not permitted"), "{out}");
    assert!(out.contains("Seccomp:\t2\n") && out.contains("NoNewPrivs:\t0\n"), "{out}");
    let init_caps = std::fs::read_to_string(format!("/proc/{}/status", berth.state(&id)["pid"])).unwrap();
    for set in ["CapBnd", "CapEff", "CapPrm"] {
        let line = |text: &str| text.lines().find(|l| l.starts_with(set)).map(str::to_string);
        assert_eq!(line(&out), line(&init_caps), "{set} of the exec'd process differs from the container's:\n{out}");
    }
    // With CAP_SYS_ADMIN kept, nothing needs lending.
    let out = berth.ok(&["exec", "--cap", "CAP_SYS_ADMIN", &id, "sh", "-c", script]);
    assert!(out.contains("mkdir=1") && out.contains("Seccomp:\t2\n") && out.contains("NoNewPrivs:\t0\n"), "{out}");
    berth.ok(&["kill", &id, "KILL"]);
    berth.wait_status(&id, "stopped");
    berth.ok(&["delete", &id]);
}

#[test]
fn oom_score_adj_is_applied_or_refused_naming_cap_sys_resource() {
    if !require_root("oom_score_adj_is_applied_or_refused_naming_cap_sys_resource") {
        return;
    }
    let berth = Berth::new("oom-adj");
    let run_with = |value: i32| {
        let mut bundle = Bundle::busybox("oom-adj", &["sh", "-c", "cat /proc/self/oom_score_adj"]);
        bundle.spec["process"]["oomScoreAdj"] = json!(value);
        bundle.write_spec();
        berth.run_bundle(bundle.path(), &container_id("oom-adj"))
    };
    // Raising needs no privilege: the container's process has the value.
    let (code, stdout, stderr) = run_with(1000);
    assert_eq!((code, stdout.trim()), (0, "1000"), "{stderr}");
    // The lowest value needs CAP_SYS_RESOURCE, which these machines (containers) lack.
    let has_cap_sys_resource = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|caps| u64::from_str_radix(caps.trim(), 16).unwrap() & (1 << 24) != 0)
        .unwrap();
    let (code, stdout, stderr) = run_with(-1000);
    if has_cap_sys_resource {
        assert_eq!((code, stdout.trim()), (0, "-1000"), "{stderr}");
    } else {
        assert_ne!(code, 0);
        assert!(stderr.contains("process.oomScoreAdj -1000 is below the lowest oom_score_adj"), "{stderr}");
        assert!(stderr.contains("CAP_SYS_RESOURCE") && stderr.contains("restrict_oom_score_adj"), "{stderr}");
    }
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

/// Runs `mkdir` (mode 0777) under a seccomp filter with `rules`; returns (exit code, stdout).
fn under_seccomp(berth: &Berth, name: &str, rules: Value) -> (i32, String) {
    let mut bundle = Bundle::busybox(name, &["sh", "-c", "mkdir /tmp/x 2>&1; echo mkdir=$?"]);
    bundle.spec["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": features_archs(),
        "syscalls": rules
    });
    bundle.write_spec();
    let (code, stdout, _) = berth.run_bundle(bundle.path(), &container_id(name));
    (code, stdout)
}

#[test]
fn every_advertised_seccomp_action_and_operator_works() {
    if !require_root("every_advertised_seccomp_action_and_operator_works") {
        return;
    }
    let berth = Berth::new("seccomp-all");
    let features: Value = serde_json::from_str(&berth.ok(&["features"])).unwrap();
    let names = |key: &str| -> Vec<String> {
        features["linux"]["seccomp"][key].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
    };
    let mkdir = json!(["mkdir", "mkdirat"]);
    for action in names("actions") {
        let (code, stdout) =
            under_seccomp(&berth, "seccomp-action", json!([{"names": mkdir, "action": action, "errnoRet": 13}]));
        match action.as_str() {
            "SCMP_ACT_ALLOW" | "SCMP_ACT_LOG" => assert_eq!((code, stdout.as_str()), (0, "mkdir=0\n"), "{action}"),
            "SCMP_ACT_ERRNO" => {
                assert!(stdout.contains("Permission denied") && stdout.contains("mkdir=1"), "{action}: {stdout}")
            }
            // No tracer is attached, so a traced syscall fails with ENOSYS.
            "SCMP_ACT_TRACE" => {
                assert!(stdout.contains("not implemented") && stdout.contains("mkdir=1"), "{action}: {stdout}")
            }
            // mkdir runs in a child of the shell: SIGSYS kills it (128+31) and the shell goes on.
            "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" | "SCMP_ACT_KILL_PROCESS" | "SCMP_ACT_TRAP" => {
                assert!(code == 0 && stdout.ends_with("mkdir=159\n"), "{action}: {code} {stdout}")
            }
            other => panic!("features advertises seccomp action {other} that no test covers"),
        }
    }
    // Operators on the mode argument (mkdir's second, mkdirat's third): each matches 0777.
    for op in names("operators") {
        let (value, value_two) = match op.as_str() {
            "SCMP_CMP_EQ" | "SCMP_CMP_GE" | "SCMP_CMP_LE" => (0o777, 0),
            "SCMP_CMP_NE" | "SCMP_CMP_GT" => (0o700, 0),
            "SCMP_CMP_LT" => (0o1000, 0),
            "SCMP_CMP_MASKED_EQ" => (0o700, 0o700),
            other => panic!("features advertises seccomp operator {other} that no test covers"),
        };
        let rule = |name: &str, index: u32| {
            json!({"names": [name], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
                "args": [{"index": index, "value": value, "valueTwo": value_two, "op": op}]})
        };
        let (code, stdout) = under_seccomp(&berth, "seccomp-op", json!([rule("mkdir", 1), rule("mkdirat", 2)]));
        assert_eq!(code, 0);
        assert!(stdout.contains("mkdir=1"), "{op} did not match mode 0777: {stdout}");
    }
    // A rule whose condition does not match leaves the syscall alone.
    let unmatched = json!([{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
        "args": [{"index": 1, "value": 0o700, "op": "SCMP_CMP_EQ"}]}]);
    assert_eq!(under_seccomp(&berth, "seccomp-unmatched", unmatched), (0, "mkdir=0\n".to_string()));
}

#[test]
fn preserved_fds_no_pivot_and_ps_arguments() {
    if !require_root("preserved_fds_no_pivot_and_ps_arguments") {
        return;
    }
    // --preserve-fds 1 hands the caller's fd 3 to the container.
    let bundle = Bundle::busybox("preserve", &["sh", "-c", "cat <&3"]);
    let berth = Berth::new("preserve");
    let dir = TempDir::new("berth-preserve");
    std::fs::write(dir.path().join("given"), "through fd 3\n").unwrap();
    let given = std::fs::File::open(dir.path().join("given")).unwrap();
    let mut command = berth.command(&[
        "run",
        "--preserve-fds",
        "1",
        "-b",
        bundle.path().to_str().unwrap(),
        &container_id("preserve"),
    ]);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&given);
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
            // dup2 onto itself would keep close-on-exec, so clear it in that case.
            let ok = if fd == 3 { libc::fcntl(3, libc::F_SETFD, 0) } else { libc::dup2(fd, 3) };
            if ok < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = command.output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through fd 3\n", "{}", String::from_utf8_lossy(&out.stderr));

    // --no-pivot enters the rootfs without pivot_root and still runs the bundle.
    let no_pivot = Bundle::busybox("nopivot", &["sh", "-c", "cat /etc/passwd | head -1"]);
    let out = berth.output(&["run", "--no-pivot", "-b", no_pivot.path().to_str().unwrap(), &container_id("nopivot")]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "root:x:0:0:root:/root:/bin/sh\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // ps passes its arguments to ps(1) and keeps only the container's rows.
    let (_sleeper, berth, id) = running("psargs");
    let table = berth.ok(&["ps", &id, "-o", "pid,comm"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), ["PID", "COMMAND"]);
    assert_eq!(lines.len(), 2, "{table}");
    assert!(lines[1].ends_with("sleep"), "{table}");
}

#[test]
fn every_advertised_capability_can_be_granted() {
    if !require_root("every_advertised_capability_can_be_granted") {
        return;
    }
    let berth = Berth::new("allcaps");
    let features: Value = serde_json::from_str(&berth.ok(&["features"])).unwrap();
    let caps: Vec<String> =
        features["linux"]["capabilities"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    assert!(caps.len() > 30, "{caps:?}");
    let mut bundle = Bundle::busybox("allcaps", &["grep", "-E", "^Cap(Eff|Bnd)", "/proc/self/status"]);
    for set in ["bounding", "effective", "permitted"] {
        bundle.spec["process"]["capabilities"][set] = json!(caps);
    }
    bundle.write_spec();
    let (code, stdout, stderr) = berth.run_bundle(bundle.path(), &container_id("allcaps"));
    assert_eq!(code, 0, "{stderr}");
    // The mask of the advertised capabilities, as the kernel numbers them.
    let mask: u64 = caps.iter().map(|name| 1u64 << cap_number(name)).sum();
    let expected = format!("{mask:016x}");
    for line in stdout.lines() {
        assert_eq!(line.split_whitespace().nth(1), Some(expected.as_str()), "{stdout}");
    }
}

fn cap_number(name: &str) -> u32 {
    const NAMES: [&str; 41] = [
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    ];
    let short = name.strip_prefix("CAP_").unwrap_or(name);
    NAMES.iter().position(|n| *n == short).unwrap_or_else(|| panic!("unknown capability {name}")) as u32
}

/// Every architecture `features` advertises: the filters above carry them all.
fn features_archs() -> Value {
    let berth = Berth::new("archs");
    let features: Value = serde_json::from_str(&berth.ok(&["features"])).unwrap();
    features["linux"]["seccomp"]["archs"].clone()
}

/// The effective capability mask in a /proc/PID/status text.
fn cap_eff(status: &str) -> u64 {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:")).expect("no CapEff line").trim();
    u64::from_str_radix(hex, 16).unwrap()
}

#[test]
fn exec_additional_gids_and_added_capabilities_reach_the_process() {
    if !require_root("exec_additional_gids_and_added_capabilities_reach_the_process") {
        return;
    }
    let (_bundle, berth, id) = running("execflags");
    // -g adds supplementary groups to the exec'd process; without it there are none.
    assert_eq!(
        berth
            .ok(&["exec", "-u", "1000:1000", "-g", "2000", "-g", "3000", &id, "id", "-G"])
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["1000", "2000", "3000"]
    );
    assert_eq!(berth.ok(&["exec", "-u", "1000:1000", &id, "id", "-G"]).trim(), "1000");

    // --cap adds a capability the container's process does not have (CAP_NET_ADMIN, bit 12).
    const CAP_NET_ADMIN: u64 = 1 << 12;
    let with_cap = cap_eff(&berth.ok(&["exec", "--cap", "CAP_NET_ADMIN", &id, "cat", "/proc/self/status"]));
    assert_ne!(with_cap & CAP_NET_ADMIN, 0, "CapEff {with_cap:x} lacks CAP_NET_ADMIN");
    let without = cap_eff(&berth.ok(&["exec", &id, "cat", "/proc/self/status"]));
    assert_eq!(without & CAP_NET_ADMIN, 0, "CapEff {without:x} has CAP_NET_ADMIN without --cap");
    // The bundle's own capabilities are kept beside the added one (CAP_KILL, bit 5).
    assert_eq!(with_cap, without | CAP_NET_ADMIN);
    assert_ne!(without & (1 << 5), 0);
    // And the capability works: only with it may the process change an interface.
    assert_eq!(
        berth.output(&["exec", "--cap", "CAP_NET_ADMIN", &id, "ip", "link", "set", "lo", "mtu", "1500"]).status.code(),
        Some(0)
    );
    assert_ne!(berth.output(&["exec", &id, "ip", "link", "set", "lo", "mtu", "1500"]).status.code(), Some(0));
}

/// True when `path` exists in the mount namespace of process `pid` (seen from its root mount).
fn exists_in_mount_namespace(pid: i64, path: &std::path::Path) -> bool {
    let namespace = std::fs::File::open(format!("/proc/{pid}/ns/mnt")).unwrap();
    let path = path.to_path_buf();
    // A thread of its own: it stops sharing the test's filesystem context, then enters.
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS).unwrap();
        nix::sched::setns(&namespace, nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
        path.exists()
    })
    .join()
    .unwrap()
}

#[test]
fn no_pivot_leaves_the_host_root_under_the_container_root() {
    if !require_root("no_pivot_leaves_the_host_root_under_the_container_root") {
        return;
    }
    // pivot_root detaches the host's root from the container's mount namespace; --no-pivot
    // moves the rootfs on top of it instead. Lazily unmounting the container's root then
    // shows what lies under it: nothing with pivot_root, the host's tree with --no-pivot.
    let mut bundle = Bundle::busybox("pivot", &["sh", "-c", "umount -l / && touch /unmounted; sleep 300"]);
    for set in ["bounding", "effective", "permitted"] {
        bundle.spec["process"]["capabilities"][set].as_array_mut().unwrap().push(json!("CAP_SYS_ADMIN"));
    }
    bundle.write_spec();
    let berth = Berth::new("pivot");
    let marker = bundle.rootfs().join("unmounted");
    for (no_pivot, host_visible) in [(false, false), (true, true)] {
        let _ = std::fs::remove_file(&marker);
        let id = container_id("pivot");
        let mut args = vec!["run", "-d", "-b", bundle.path().to_str().unwrap(), &id];
        if no_pivot {
            args.insert(1, "--no-pivot");
        }
        berth.ok(&args);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !marker.exists() {
            assert!(std::time::Instant::now() < deadline, "the container never unmounted its root");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let pid = berth.state(&id)["pid"].as_i64().unwrap();
        assert_eq!(
            exists_in_mount_namespace(pid, bundle.path()),
            host_visible,
            "no_pivot={no_pivot}: the host's bundle directory {} under the container's root",
            bundle.path().display()
        );
        berth.ok(&["delete", "-f", &id]);
    }
}
