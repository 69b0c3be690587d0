//! berth's runc-compatible lifecycle: create, start, state, kill, delete, run, list, spec,
//! with runc's observable behaviour (state shape, pid 0 once stopped, exit codes, errors).

use berth_tests::fixtures::{container_id, Bundle, TempDir};
use berth_tests::privilege::require_root;
use berth_tests::runtime::Berth;

#[test]
fn create_start_kill_delete_walks_the_lifecycle() {
    if !require_root("create_start_kill_delete_walks_the_lifecycle") {
        return;
    }
    let script = "trap 'exit 0' TERM; echo set > /trapping; while true; do sleep 0.05; done";
    let bundle = Bundle::busybox("life", &["sh", "-c", script]);
    let berth = Berth::new("life");
    let id = container_id("life");
    let bundle_path = bundle.path().to_str().unwrap();
    let pid_file = bundle.path().join("init.pid");
    berth.ok(&["create", "--bundle", bundle_path, "--pid-file", pid_file.to_str().unwrap(), &id]);

    let state = berth.state(&id);
    assert_eq!(state["status"], "created");
    assert_eq!(state["id"], id.as_str());
    assert_eq!(state["ociVersion"], "1.1.0");
    assert_eq!(state["bundle"], bundle_path);
    assert_eq!(state["rootfs"], bundle.rootfs().to_str().unwrap());
    assert_eq!(state["owner"], "");
    assert!(state["created"].as_str().unwrap().ends_with('Z'), "created is RFC 3339 UTC: {state}");
    let pid = state["pid"].as_i64().unwrap();
    assert!(pid > 0);
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap().trim(), pid.to_string());

    berth.ok(&["start", &id]);
    assert_eq!(berth.state(&id)["status"], "running");
    // PID 1 of a pid namespace drops a SIGTERM it has no handler for, so the test signals
    // only once the trap is set, as a user who checks readiness would.
    wait_for_file(&bundle.rootfs().join("trapping"));
    // The process really runs the bundle's program.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert_eq!(cmdline, format!("sh\0-c\0{script}\0").as_bytes());

    berth.ok(&["kill", &id]); // SIGTERM by default: the trap ends the loop
    let stopped = berth.wait_status(&id, "stopped");
    assert_eq!(stopped["pid"], 0, "a stopped container reports pid 0");

    berth.ok(&["delete", &id]);
    let err = berth.fails(&["state", &id]);
    assert!(err.contains("container does not exist"), "{err}");
    assert!(!berth.root().join(&id).exists(), "state directory left behind");
}

#[test]
fn run_returns_the_exit_code_and_128_plus_signal() {
    if !require_root("run_returns_the_exit_code_and_128_plus_signal") {
        return;
    }
    let mut bundle = Bundle::busybox("exitcode", &["sh", "-c", "echo out; echo err >&2; exit 7"]);
    let berth = Berth::new("exitcode");
    let (code, stdout, stderr) = berth.run_bundle(bundle.path(), &container_id("exit7"));
    assert_eq!((code, stdout.as_str(), stderr.as_str()), (7, "out\n", "err\n"));

    // A container's init killed by a signal: run exits with 128+signal.
    bundle.set_args(&["sleep", "300"]);
    let id = container_id("killed");
    let mut run = berth.command(&["run", "-b", bundle.path().to_str().unwrap(), &id]).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !matches!(berth.output(&["state", &id]), out if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("running"))
    {
        assert!(std::time::Instant::now() < deadline, "container never ran");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    berth.ok(&["kill", &id, "KILL"]);
    assert_eq!(run.wait().unwrap().code(), Some(137));
    // Foreground run deletes the container afterwards.
    assert_eq!(berth.ok(&["list", "-q"]), "");
}

/// A foreground `berth run` of a bundle whose output lines are read on a thread: a berth
/// that dies of a signal leaves the container (and its end of the pipe) running, and a test
/// must fail rather than wait for it forever.
struct PrintingRun {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl PrintingRun {
    fn start(berth: &Berth, bundle: &Bundle, test: &str) -> PrintingRun {
        let id = container_id(test);
        let mut child = berth
            .command(&["run", "--bundle", bundle.path().to_str().unwrap(), &id])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(stdout).map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        PrintingRun { child, lines }
    }

    /// The next line the container printed, or an error after 10 s without one.
    fn next_line(&self) -> Result<String, std::sync::mpsc::RecvTimeoutError> {
        self.lines.recv_timeout(std::time::Duration::from_secs(10))
    }

    /// Sends signal `number` to the foreground berth.
    fn signal(&self, number: i32) {
        // SAFETY: kill(2) with the foreground berth's pid and a signal number.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, number) }, 0);
    }
}

#[test]
fn run_forwards_signals_to_the_container() {
    if !require_root("run_forwards_signals_to_the_container") {
        return;
    }
    let bundle = Bundle::busybox(
        "forward",
        &["sh", "-c", "trap 'echo got-term; exit 42' TERM; echo ready; while true; do sleep 0.05; done"],
    );
    let berth = Berth::new("forward");
    let mut run = PrintingRun::start(&berth, &bundle, "forward");
    assert_eq!(run.next_line().as_deref(), Ok("ready"));
    run.signal(libc::SIGTERM);
    let status = run.child.wait().unwrap();
    assert_eq!(run.next_line().as_deref(), Ok("got-term"));
    assert_eq!(status.code(), Some(42));
}

/// Real-time signals are forwarded too: 34, SIGRTMIN as Docker and runc number it (which
/// musl, berth's release build, keeps for itself), and 40.
#[test]
fn run_forwards_real_time_signals_to_the_container() {
    if !require_root("run_forwards_real_time_signals_to_the_container") {
        return;
    }
    let bundle = Bundle::busybox(
        "forward-rt",
        &[
            "sh",
            "-c",
            "trap 'echo got-34' 34; trap 'echo got-40; exit 40' 40; echo ready; while true; do sleep 0.05; done",
        ],
    );
    let berth = Berth::new("forward-rt");
    let mut run = PrintingRun::start(&berth, &bundle, "forward-rt");
    assert_eq!(run.next_line().as_deref(), Ok("ready"));
    for (signal, expected) in [(34, "got-34"), (40, "got-40")] {
        run.signal(signal);
        assert_eq!(run.next_line().as_deref(), Ok(expected), "signal {signal} did not reach the container");
    }
    assert_eq!(run.child.wait().unwrap().code(), Some(40));
}

#[test]
fn detached_run_list_and_kill_forms() {
    if !require_root("detached_run_list_and_kill_forms") {
        return;
    }
    let bundle = Bundle::busybox("detach", &["sleep", "300"]);
    let berth = Berth::new("detach");
    let (a, b) = (container_id("det-a"), container_id("det-b"));
    for id in [&a, &b] {
        berth.ok(&["run", "-d", "-b", bundle.path().to_str().unwrap(), id]);
        assert_eq!(berth.state(id)["status"], "running");
    }
    let mut ids: Vec<String> = berth.ok(&["list", "-q"]).lines().map(String::from).collect();
    ids.sort();
    let mut expected = vec![a.clone(), b.clone()];
    expected.sort();
    assert_eq!(ids, expected);

    let json: serde_json::Value = serde_json::from_str(&berth.ok(&["list", "--format", "json"])).unwrap();
    let list = json.as_array().expect("list --format json is an array");
    assert_eq!(list.len(), 2);
    assert!(list.iter().all(|c| c["status"] == "running" && c["pid"].as_i64().unwrap() > 0 && c["owner"] == "root"));

    let table = berth.ok(&["list"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]);
    assert!(table.contains(&a) && table.contains(&b));

    // Signal 0 checks that the container runs (as kill(2) and runc take it), sending nothing.
    berth.ok(&["kill", &a, "0"]);
    let state: serde_json::Value = serde_json::from_str(&berth.ok(&["state", &a])).unwrap();
    assert_eq!(state["status"], "running", "{state}");

    // Signals by name without prefix, with prefix, and by number.
    berth.ok(&["kill", &a, "KILL"]);
    berth.wait_status(&a, "stopped");
    berth.ok(&["kill", &b, "9"]);
    berth.wait_status(&b, "stopped");
    let err = berth.fails(&["kill", &a, "SIGKILL"]);
    assert!(err.contains("container not running"), "{err}");
    let err = berth.fails(&["kill", &a, "0"]);
    assert!(err.contains("container not running"), "{err}");
    let err = berth.fails(&["kill", &a, "NOTASIGNAL"]);
    assert!(err.contains("unknown signal"), "{err}");
    berth.ok(&["delete", &a]);
    berth.ok(&["delete", &b]);
    assert_eq!(berth.ok(&["list", "--format=json"]).trim(), "[]");
}

#[test]
fn delete_rules_follow_runc() {
    if !require_root("delete_rules_follow_runc") {
        return;
    }
    let bundle = Bundle::busybox("delete", &["sleep", "300"]);
    let berth = Berth::new("delete");
    let bundle_path = bundle.path().to_str().unwrap();

    // A created container is deleted without --force, its init killed.
    let created = container_id("del-created");
    berth.ok(&["create", "-b", bundle_path, &created]);
    let pid = berth.state(&created)["pid"].as_i64().unwrap();
    berth.ok(&["delete", &created]);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid),
        "init of deleted container survives"
    );

    // A running one needs --force.
    let running = container_id("del-running");
    berth.ok(&["run", "-d", "-b", bundle_path, &running]);
    let err = berth.fails(&["delete", &running]);
    assert!(err.contains("not stopped"), "{err}");
    assert_eq!(berth.state(&running)["status"], "running");
    berth.ok(&["delete", "--force", &running]);
    berth.fails(&["state", &running]);

    // delete -f of a missing id succeeds; without -f it is an error.
    berth.ok(&["delete", "-f", "no-such-container"]);
    let err = berth.fails(&["delete", "no-such-container"]);
    assert!(err.contains("container does not exist"), "{err}");
}

fn is_zombie(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| s.contains(") Z ")).unwrap_or(true)
}

#[test]
fn start_twice_and_duplicate_ids_are_refused() {
    if !require_root("start_twice_and_duplicate_ids_are_refused") {
        return;
    }
    let bundle = Bundle::busybox("twice", &["sleep", "300"]);
    let berth = Berth::new("twice");
    let id = container_id("twice");
    let bundle_path = bundle.path().to_str().unwrap();
    berth.ok(&["create", "-b", bundle_path, &id]);
    let err = berth.fails(&["create", "-b", bundle_path, &id]);
    assert!(err.contains("container with id exists"), "{err}");
    berth.ok(&["start", &id]);
    let err = berth.fails(&["start", &id]);
    assert!(err.contains("cannot start an already running container"), "{err}");
    berth.ok(&["kill", &id, "KILL"]);
    berth.wait_status(&id, "stopped");
    let err = berth.fails(&["start", &id]);
    assert!(err.contains("cannot start a container that has stopped"), "{err}");
}

#[test]
fn state_of_a_reused_pid_is_not_running() {
    if !require_root("state_of_a_reused_pid_is_not_running") {
        return;
    }
    let bundle = Bundle::busybox("reuse", &["sleep", "300"]);
    let berth = Berth::new("reuse");
    let id = container_id("reuse");
    berth.ok(&["run", "-d", "-b", bundle.path().to_str().unwrap(), &id]);
    // Make the recorded pid point at another live process (this test's own), as a reused
    // pid would after the container's init died.
    let state_file = berth.root().join(&id).join("state.json");
    let mut state: serde_json::Value = serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    let real_pid = state["pid"].as_i64().unwrap();
    state["pid"] = serde_json::json!(std::process::id());
    std::fs::write(&state_file, serde_json::to_vec(&state).unwrap()).unwrap();
    let shown = berth.state(&id);
    assert_eq!(shown["status"], "stopped", "{shown}");
    assert_eq!(shown["pid"], 0);
    let err = berth.fails(&["kill", &id, "KILL"]);
    assert!(err.contains("container not running"), "{err}");
    // Put the real pid back so cleanup reaches the real init.
    state["pid"] = serde_json::json!(real_pid);
    std::fs::write(&state_file, serde_json::to_vec(&state).unwrap()).unwrap();
    berth.ok(&["delete", "-f", &id]);
}

#[test]
fn spec_writes_a_runnable_default_once() {
    let dir = TempDir::new("berth-spec");
    let berth = Berth::new("spec");
    berth.ok(&["spec", "--bundle", dir.path().to_str().unwrap()]);
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(spec["process"]["args"], serde_json::json!(["sh"]));
    assert_eq!(spec["process"]["terminal"], true);
    assert_eq!(spec["root"]["path"], "rootfs");
    let types: Vec<&str> =
        spec["linux"]["namespaces"].as_array().unwrap().iter().map(|n| n["type"].as_str().unwrap()).collect();
    for ns in ["pid", "network", "ipc", "uts", "mount"] {
        assert!(types.contains(&ns), "default spec lacks the {ns} namespace: {types:?}");
    }
    let err = berth.fails(&["spec", "-b", dir.path().to_str().unwrap()]);
    assert!(err.contains("exists"), "{err}");

    let rootless = TempDir::new("berth-spec-rootless");
    berth.ok(&["--rootless", "spec", "-b", rootless.path().to_str().unwrap()]);
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rootless.path().join("config.json")).unwrap()).unwrap();
    assert!(spec["linux"]["namespaces"].as_array().unwrap().iter().any(|n| n["type"] == "user"));
    assert_eq!(spec["linux"]["uidMappings"][0]["containerID"], 0);
}

#[test]
fn version_is_in_runcs_format() {
    let berth = Berth::new("version");
    let text = berth.ok(&["--version"]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("berth version "), "{text}");
    assert!(lines.iter().any(|l| l.starts_with("commit: ")), "{text}");
    assert!(lines.contains(&"spec: 1.1.0"), "{text}");
    assert!(lines.iter().any(|l| l.starts_with("libseccomp: ")), "{text}");
    assert_eq!(berth.ok(&["-v"]), text);
}

#[test]
fn systemd_cgroup_flag_on_this_hosts_layout() {
    if !require_root("systemd_cgroup_flag_on_this_hosts_layout") {
        return;
    }
    let layout = berth_tests::runtime::cgroup_layout();
    eprintln!("cgroup layout: {layout}");
    let mut bundle = Bundle::busybox("systemd", &["true"]);
    let berth = Berth::new("systemd");
    // A plain cgroupsPath works with the flag: cgroupfs manages it on v1 hosts.
    let out =
        berth.output(&["--systemd-cgroup", "run", "-b", bundle.path().to_str().unwrap(), &container_id("sd-plain")]);
    let systemd_as_init = std::path::Path::new("/run/systemd/system").exists();
    if layout.starts_with("v1") || !systemd_as_init {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        bundle.spec["linux"]["cgroupsPath"] = serde_json::json!("system.slice:berth:sdtest");
        bundle.write_spec();
        let err =
            berth.fails(&["--systemd-cgroup", "run", "-b", bundle.path().to_str().unwrap(), &container_id("sd-slice")]);
        assert!(err.contains("needs systemd as init on a cgroup v2 host"), "{err}");
        let err = berth.fails(&["run", "-b", bundle.path().to_str().unwrap(), &container_id("sd-noflag")]);
        assert!(err.contains("pass --systemd-cgroup"), "{err}");
        assert_eq!(std::fs::read_dir(berth.root()).unwrap().count(), 0);
    }
}

#[test]
fn rootless_and_criu_flags_are_accepted() {
    let berth = Berth::new("flags");
    berth.ok(&["--rootless=false", "list"]);
    berth.ok(&["--rootless", "auto", "list", "-q"]);
    berth.ok(&["--criu", "/usr/sbin/criu", "list"]);
    let out = berth.output(&["--no-such-flag", "list"]);
    assert_eq!(out.status.code(), Some(1), "bad usage exits 1 as in runc");
}

/// Waits (up to 10 s) for `path` to exist and returns its content.
fn wait_for_file(path: &std::path::Path) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if !text.is_empty() {
                return text;
            }
        }
        assert!(std::time::Instant::now() < deadline, "{} never appeared", path.display());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn kill_all_reaches_processes_besides_the_init() {
    if !require_root("kill_all_reaches_processes_besides_the_init") {
        return;
    }
    let bundle = Bundle::busybox("killall", &["sleep", "300"]);
    let berth = Berth::new("killall");
    let id = container_id("killall");
    berth.ok(&["run", "-d", "-b", bundle.path().to_str().unwrap(), &id]);
    // An exec'd process (not the init) records each signal it traps in a file of the rootfs.
    let record = bundle.rootfs().join("tmp/signals");
    let ready = bundle.rootfs().join("tmp/trapping");
    berth.ok(&["exec", "-d", &id, "sh", "-c",
        "trap 'echo USR2 >> /tmp/signals' USR2; trap 'echo USR1 >> /tmp/signals' USR1; echo $$ > /tmp/trapping; while :; do sleep 0.05; done"]);
    let trapper: i64 = wait_for_file(&ready).trim().parse().unwrap();
    let init = berth.state(&id)["pid"].as_i64().unwrap();
    // Without --all only the init gets the signal (and ignores it, being a pid namespace's init).
    berth.ok(&["kill", &id, "USR2"]);
    berth.ok(&["kill", "--all", &id, "USR1"]);
    // The shell runs the traps of every pending signal once its sleep ends, so a USR2 that
    // had reached it would be recorded together with USR1.
    let recorded = wait_for_file(&record);
    assert_eq!(recorded, "USR1\n", "kill --all must reach the exec'd process (pid {trapper} in the container), and plain kill only the init {init}");
    assert_eq!(berth.state(&id)["status"], "running", "the init ignores USR1 and keeps running");
    berth.ok(&["delete", "-f", &id]);
}

#[test]
fn run_keep_leaves_the_stopped_container_until_delete() {
    if !require_root("run_keep_leaves_the_stopped_container_until_delete") {
        return;
    }
    let bundle = Bundle::busybox("keep", &["sh", "-c", "exit 3"]);
    let berth = Berth::new("keep");
    let kept = container_id("kept");
    let out = berth.output(&["run", "--keep", "-b", bundle.path().to_str().unwrap(), &kept]);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let state = berth.state(&kept);
    assert_eq!((state["status"].as_str(), state["pid"].as_i64()), (Some("stopped"), Some(0)), "{state}");
    assert_eq!(berth.ok(&["list", "-q"]), format!("{kept}\n"));
    let listed: serde_json::Value = serde_json::from_str(&berth.ok(&["list", "--format", "json"])).unwrap();
    assert_eq!(listed[0]["status"], "stopped");
    berth.ok(&["delete", &kept]);
    assert_eq!(berth.ok(&["list", "-q"]), "");

    // Without --keep the container is gone once its process exits.
    let gone = container_id("gone");
    let out = berth.output(&["run", "-b", bundle.path().to_str().unwrap(), &gone]);
    assert_eq!(out.status.code(), Some(3));
    let err = berth.fails(&["state", &gone]);
    assert!(err.contains("container does not exist"), "{err}");
    assert_eq!(berth.ok(&["list", "-q"]), "");
}
