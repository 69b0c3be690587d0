//! Bad input: exit 1, one clear line on stderr in runc's wording, exactly one error line in
//! a JSON `--log` (more only with `--debug`), and nothing left behind.

use berth_tests::fixtures::{container_id, Bundle, TempDir};
use berth_tests::privilege::require_root;
use berth_tests::runtime::Berth;
use serde_json::{json, Value};

/// Runs berth with a JSON log; asserts exit 1, one stderr line containing `phrase`, and a
/// log holding exactly one error line with the same message.
fn fails_with(berth: &Berth, args: &[&str], phrase: &str) {
    let log = TempDir::new("berth-log");
    let log_file = log.path().join("log.json");
    let mut full = vec!["--log", log_file.to_str().unwrap(), "--log-format", "json"];
    full.extend_from_slice(args);
    let stderr = berth.fails(&full);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: stderr should be one line: {stderr:?}");
    assert!(lines[0].contains(phrase), "{args:?}: {stderr:?} lacks {phrase:?}");
    let log_text = std::fs::read_to_string(&log_file).unwrap();
    let log_lines: Vec<&str> = log_text.lines().collect();
    assert_eq!(log_lines.len(), 1, "{args:?}: the log should hold one line: {log_text}");
    let entry: Value = serde_json::from_str(log_lines[0]).unwrap();
    assert_eq!(entry["level"], "error");
    assert_eq!(entry["msg"], lines[0]);
    assert!(entry["time"].as_str().is_some());
}

#[test]
fn unknown_ids_are_reported_as_runc_does() {
    let berth = Berth::new("unknown");
    for args in [["state", "ghost"], ["start", "ghost"], ["kill", "ghost"], ["delete", "ghost"]] {
        fails_with(&berth, &args, "container does not exist");
    }
    fails_with(&berth, &["state", "../escape"], "invalid container id");
    // Without --root, root uses /run/berth as runc uses /run/runc.
    let out = std::process::Command::new(&berth.bin).args(["state", "ghost-without-root"]).output().unwrap();
    if nix::unistd::geteuid().is_root() {
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("under /run/berth"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn bad_bundles_are_refused_and_leave_nothing() {
    if !require_root("bad_bundles_are_refused_and_leave_nothing") {
        return;
    }
    let berth = Berth::new("badbundle");
    let id = container_id("bad");
    fails_with(&berth, &["create", "-b", "/nonexistent/bundle", &id], "bundle /nonexistent/bundle does not exist");

    let empty = TempDir::new("berth-empty-bundle");
    fails_with(&berth, &["create", "-b", empty.path().to_str().unwrap(), &id], "has no config.json");

    std::fs::write(empty.path().join("config.json"), "{ not json").unwrap();
    fails_with(&berth, &["create", "-b", empty.path().to_str().unwrap(), &id], "invalid config.json");

    std::fs::write(empty.path().join("config.json"), r#"{"ociVersion": "1.1.0", "root": {"path": "rootfs"}, "process": {"cwd": "/", "user": {"uid": 0, "gid": 0}, "args": []}}"#).unwrap();
    fails_with(&berth, &["create", "-b", empty.path().to_str().unwrap(), &id], "process.args");

    let mut bundle = Bundle::busybox("norootfs", &["true"]);
    bundle.spec["root"]["path"] = json!("missing-rootfs");
    bundle.write_spec();
    fails_with(&berth, &["create", "-b", bundle.path().to_str().unwrap(), &id], "is not a directory");
    assert!(std::fs::read_dir(berth.root()).map(|d| d.count() == 0).unwrap_or(true), "state left behind");
}

#[test]
fn a_program_that_cannot_run_and_an_impossible_mount_leave_nothing() {
    if !require_root("a_program_that_cannot_run_and_an_impossible_mount_leave_nothing") {
        return;
    }
    let berth = Berth::new("cannotrun");
    let mut bundle = Bundle::busybox("cannotrun", &["/no/such/program"]);
    let id = container_id("cannotrun");
    fails_with(&berth, &["run", "-b", bundle.path().to_str().unwrap(), &id], "/no/such/program");
    fails_with(&berth, &["create", "-b", bundle.path().to_str().unwrap(), &id], "/no/such/program");

    std::fs::write(bundle.rootfs().join("not-executable"), "data").unwrap();
    bundle.set_args(&["/not-executable"]);
    fails_with(&berth, &["create", "-b", bundle.path().to_str().unwrap(), &id], "not-executable");

    bundle.set_args(&["true"]);
    bundle.spec["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/data", "type": "bind", "source": "/nonexistent/source", "options": ["rbind"]}));
    bundle.write_spec();
    fails_with(
        &berth,
        &["create", "-b", bundle.path().to_str().unwrap(), &id],
        "bind source /nonexistent/source does not exist",
    );
    // A mount the kernel refuses inside the new namespaces (tmpfs with a bad option).
    bundle.spec["mounts"].as_array_mut().unwrap().pop();
    bundle.spec["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/data", "type": "tmpfs", "source": "tmpfs", "options": ["size=not-a-size"]}));
    bundle.write_spec();
    fails_with(&berth, &["create", "-b", bundle.path().to_str().unwrap(), &id], "cannot create container");

    assert_eq!(berth.ok(&["list", "-q"]), "");
    assert_eq!(std::fs::read_dir(berth.root()).unwrap().count(), 0, "state left behind");
    let relative = bundle.cgroups_path().trim_start_matches('/').to_string();
    for mount in berth_tests::runtime::cgroup_mounts() {
        assert!(!mount.join(&relative).exists(), "cgroup left in {}", mount.display());
    }
}

#[test]
fn state_errors_on_a_wrong_status_use_runcs_phrases() {
    if !require_root("state_errors_on_a_wrong_status_use_runcs_phrases") {
        return;
    }
    let bundle = Bundle::busybox("phrases", &["true"]);
    let berth = Berth::new("phrases");
    let id = container_id("phrases");
    berth.ok(&["run", "-d", "-b", bundle.path().to_str().unwrap(), &id]);
    berth.wait_status(&id, "stopped");
    fails_with(&berth, &["kill", &id, "TERM"], "container not running");
    fails_with(&berth, &["start", &id], "cannot start a container that has stopped");
    berth.ok(&["delete", &id]);
}

#[test]
fn debug_adds_detail_to_the_log() {
    if !require_root("debug_adds_detail_to_the_log") {
        return;
    }
    let berth = Berth::new("debuglog");
    let log = TempDir::new("berth-debug-log");
    let log_file = log.path().join("log.json");
    let bundle = Bundle::busybox("debuglog", &["/no/such/program"]);
    let id = container_id("debuglog");
    berth.fails(&[
        "--debug",
        "--log",
        log_file.to_str().unwrap(),
        "--log-format",
        "json",
        "create",
        "-b",
        bundle.path().to_str().unwrap(),
        &id,
    ]);
    let text = std::fs::read_to_string(&log_file).unwrap();
    let entries: Vec<Value> =
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    assert!(entries.len() > 1, "--debug should log more than the error: {text}");
    assert!(entries.iter().any(|e| e["level"] == "DEBUG" || e["level"] == "debug"), "{text}");
    assert_eq!(entries.last().unwrap()["level"], "error");

    // The text format is logrus-like: time=..., level=..., msg="...".
    let text_log = log.path().join("log.txt");
    berth.fails(&["--log", text_log.to_str().unwrap(), "state", "ghost"]);
    let line = std::fs::read_to_string(&text_log).unwrap();
    assert!(line.starts_with("time=\"") && line.contains(" level=error msg=\"container does not exist"), "{line}");
}

/// Runs berth as a caller on an SELinux host would: in a private mount namespace where
/// selinuxfs's switch exists (a tmpfs over /sys/fs holding `selinux/enforce`, the cgroup
/// mounts bound back below it), so nothing outside the namespace changes. Returns berth's
/// exit code and stderr.
fn on_an_selinux_host(berth: &Berth, args: &[&str]) -> (Option<i32>, String) {
    let fake_selinuxfs = "exec 3</sys/fs/cgroup && mount -t tmpfs berth-test-selinuxfs /sys/fs && mkdir /sys/fs/selinux /sys/fs/cgroup \
                          && echo 1 > /sys/fs/selinux/enforce && mount --no-canonicalize --rbind /proc/self/fd/3 /sys/fs/cgroup \
                          && exec 3<&- && exec \"$@\"";
    // stderr through a file: a detached container inherits it, and a pipe would stay open
    // until the container exits.
    let dir = TempDir::new("berth-selinux-stderr");
    let stderr = dir.path().join("stderr");
    let status = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", fake_selinuxfs, "sh"])
        .arg(&berth.bin)
        .arg("--root")
        .arg(berth.root())
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .status()
        .unwrap();
    (status.code(), std::fs::read_to_string(&stderr).unwrap())
}

#[test]
fn selinux_labels_are_refused_where_selinux_runs_and_berth_cannot_apply_them() {
    if !require_root("selinux_labels_are_refused_where_selinux_runs_and_berth_cannot_apply_them") {
        return;
    }
    let berth = Berth::new("selinux");
    let features: Value = serde_json::from_str(&berth.ok(&["features"])).unwrap();
    assert_eq!(
        features["linux"]["selinux"]["enabled"], false,
        "berth applies no SELinux labels, whatever the host has"
    );

    let label = "system_u:system_r:container_t:s0:c1,c2";
    let mount_label = "system_u:object_r:container_file_t:s0:c1,c2";
    let mut bundle = Bundle::busybox("selinux", &["sleep", "300"]);
    bundle.spec["process"]["selinuxLabel"] = json!(label);
    bundle.write_spec();
    let bundle_path = bundle.path().to_str().unwrap().to_string();
    let id = container_id("selinux");
    // Where SELinux runs, each label is refused by name, at create, run and exec, leaving nothing.
    for command in ["create", "run"] {
        let (code, stderr) = on_an_selinux_host(&berth, &[command, "-b", &bundle_path, &id]);
        assert_eq!(code, Some(1), "{command} with a process label: {stderr}");
        assert!(
            stderr.contains(
                "process.selinuxLabel is set and this host runs SELinux, but berth cannot apply SELinux labels"
            ),
            "{stderr}"
        );
    }
    bundle.spec["process"]["selinuxLabel"] = Value::Null;
    bundle.spec["linux"]["mountLabel"] = json!(mount_label);
    bundle.write_spec();
    let (code, stderr) = on_an_selinux_host(&berth, &["run", "-d", "-b", &bundle_path, &id]);
    assert_eq!(code, Some(1), "run with a mount label: {stderr}");
    assert!(stderr.contains("linux.mountLabel is set and this host runs SELinux"), "{stderr}");
    assert!(
        std::fs::read_dir(berth.root()).map(|d| d.count() == 0).unwrap_or(true),
        "a refused create left state behind"
    );

    // Where SELinux is off (this host), a label cannot change what a process may do: the
    // container runs with both, as under runc, and exec takes a label too.
    if std::path::Path::new("/sys/fs/selinux/enforce").exists() {
        return;
    }
    bundle.spec["process"]["selinuxLabel"] = json!(label);
    bundle.spec["linux"]["mountLabel"] = json!(mount_label);
    bundle.write_spec();
    berth.ok(&["run", "-d", "-b", &bundle_path, &id]);
    assert_eq!(berth.state(&id)["status"], "running");
    assert_eq!(berth.state(&id)["bundle"], bundle_path.as_str(), "the state names the bundle, not libcontainer's copy");
    assert_eq!(std::fs::read_dir(berth.root()).unwrap().count(), 1, "libcontainer's copy of the spec was left behind");
    berth.ok(&["exec", "--process-label", label, &id, "true"]);
    let (code, stderr) = on_an_selinux_host(&berth, &["exec", "--process-label", label, &id, "true"]);
    assert_eq!(code, Some(1), "exec with a label where SELinux runs: {stderr}");
    assert!(stderr.contains("process.selinuxLabel is set and this host runs SELinux"), "{stderr}");
    berth.ok(&["delete", "-f", &id]);
    // An empty mount label means none, here and where SELinux runs.
    bundle.spec["linux"]["mountLabel"] = json!("");
    bundle.spec["process"]["selinuxLabel"] = json!("");
    bundle.write_spec();
    let (code, stderr) = on_an_selinux_host(&berth, &["run", "-d", "-b", &bundle_path, &id]);
    assert_eq!(code, Some(0), "empty labels where SELinux runs: {stderr}");
    berth.ok(&["delete", "-f", &id]);
}
