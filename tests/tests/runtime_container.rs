//! What a container gets from berth: namespaces (and joining them by path), identity,
//! capabilities, rlimits, no_new_privileges and mounts, each seen from inside a busybox
//! container.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use berth_tests::fixtures::{container_id, Bundle, TempDir};
use berth_tests::privilege::require_root;
use berth_tests::runtime::{cgroup_layout, Berth};
use serde_json::json;

/// Runs the bundle in the foreground and returns stdout, asserting exit code 0.
fn run_ok(berth: &Berth, bundle: &Bundle, name: &str) -> String {
    run_id_ok(berth, bundle, &container_id(name))
}

fn run_id_ok(berth: &Berth, bundle: &Bundle, id: &str) -> String {
    let (code, stdout, stderr) = berth.run_bundle(bundle.path(), id);
    assert_eq!(code, 0, "container {id} failed: stdout {stdout:?} stderr {stderr:?}");
    stdout
}

fn host_link(ns: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap().to_string_lossy().into_owned()
}

#[test]
fn the_namespaces_of_runtime_spec_are_new() {
    if !require_root("the_namespaces_of_runtime_spec_are_new") {
        return;
    }
    let mut bundle = Bundle::busybox(
        "ns",
        &["sh", "-c", "echo self=$$; for n in pid net ipc uts mnt cgroup time; do echo $n=$(readlink /proc/self/ns/$n); done; cat /proc/net/dev | tail -n +3 | cut -d: -f1; cat /proc/self/cgroup | grep memory"],
    );
    bundle.spec["linux"]["namespaces"] = json!([
        {"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
        {"type": "cgroup"}, {"type": "time"}
    ]);
    bundle.spec["linux"]["timeOffsets"] = json!({"monotonic": {"secs": 86400, "nanosecs": 0}});
    bundle.write_spec();
    let berth = Berth::new("ns");
    let out = run_ok(&berth, &bundle, "ns");
    assert!(out.contains("self=1\n"), "the process is pid 1 of a new pid namespace: {out}");
    for (ns, name) in [
        ("pid", "pid"),
        ("net", "net"),
        ("ipc", "ipc"),
        ("uts", "uts"),
        ("mnt", "mnt"),
        ("cgroup", "cgroup"),
        ("time", "time"),
    ] {
        let line = out.lines().find(|l| l.starts_with(&format!("{name}="))).unwrap();
        assert!(line.contains(&format!("{ns}:[")), "{line}");
        assert_ne!(line.split_once('=').unwrap().1, host_link(ns), "{ns} namespace is the host's");
    }
    let interfaces: Vec<&str> =
        out.lines().filter(|l| !l.contains('=') && !l.contains(':')).map(|l| l.trim()).collect();
    assert_eq!(interfaces, ["lo"], "a new network namespace has only lo: {out}");
    assert!(out.contains("memory:/\n"), "the cgroup namespace is rooted at the container's cgroup: {out}");
}

#[test]
fn time_namespace_offsets_shift_the_monotonic_clock() {
    if !require_root("time_namespace_offsets_shift_the_monotonic_clock") {
        return;
    }
    let mut bundle = Bundle::busybox("timens", &["cat", "/proc/uptime"]);
    bundle.spec["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "time"}));
    bundle.spec["linux"]["timeOffsets"] = json!({"boottime": {"secs": 864000, "nanosecs": 0}});
    bundle.write_spec();
    let berth = Berth::new("timens");
    let inside: f64 = run_ok(&berth, &bundle, "timens").split_whitespace().next().unwrap().parse().unwrap();
    let host: f64 =
        std::fs::read_to_string("/proc/uptime").unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(inside - host > 863000.0, "uptime inside {inside} is not ten days past the host's {host}");
}

#[test]
fn joining_another_containers_namespaces_by_path() {
    if !require_root("joining_another_containers_namespaces_by_path") {
        return;
    }
    let first = Bundle::busybox("join-a", &["sleep", "300"]);
    let berth = Berth::new("join");
    let a = container_id("join-a");
    berth.ok(&["run", "-d", "-b", first.path().to_str().unwrap(), &a]);
    let pid = berth.state(&a)["pid"].as_i64().unwrap();
    let mut second = Bundle::busybox(
        "join-b",
        &["sh", "-c", "readlink /proc/self/ns/net; readlink /proc/self/ns/ipc; readlink /proc/self/ns/uts"],
    );
    second.spec["linux"]["namespaces"] = json!([
        {"type": "pid"}, {"type": "mount"},
        {"type": "network", "path": format!("/proc/{pid}/ns/net")},
        {"type": "ipc", "path": format!("/proc/{pid}/ns/ipc")},
        {"type": "uts", "path": format!("/proc/{pid}/ns/uts")}
    ]);
    second.spec["hostname"] = serde_json::Value::Null;
    second.write_spec();
    let out = run_ok(&berth, &second, "join-b");
    let expected: Vec<String> = ["net", "ipc", "uts"]
        .iter()
        .map(|ns| std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(out.lines().collect::<Vec<_>>(), expected);
    berth.ok(&["delete", "-f", &a]);
}

/// The directory names of the host's cgroup v1 hierarchies under /sys/fs/cgroup, and the
/// controller names linked to co-mounted ones (`cpu` for `cpu,cpuacct`).
fn host_cgroup_v1_entries() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines() {
        let (left, right) = line.split_once(" - ").unwrap();
        let point = Path::new(left.split(' ').nth(4).unwrap());
        if right.split(' ').next() == Some("cgroup") && point.parent() == Some(Path::new("/sys/fs/cgroup")) {
            let name = point.file_name().unwrap().to_string_lossy().into_owned();
            if name.contains(',') {
                names.extend(name.split(',').map(String::from));
            }
            names.insert(name);
        }
    }
    names
}

/// Moves the pid counter of the PID namespace of `pid` so that its next process gets a
/// pid no host process has: libcontainer 0.7 looked that pid up in the host's /proc.
fn skip_pids_the_host_uses(pid: i64) -> i64 {
    let pid_max: i64 = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap().trim().parse().unwrap();
    let free = |last: i64| (last + 1..=last + 50).all(|p| !Path::new(&format!("/proc/{p}")).exists());
    let last = (100..pid_max - 100).rev().step_by(97).find(|&last| free(last)).expect("no free pid range on the host");
    let status = Command::new("nsenter")
        .args(["--target", &pid.to_string(), "--pid", "--", "sh", "-c"])
        .arg(format!("echo {last} > /proc/sys/kernel/ns_last_pid"))
        .status()
        .expect("cannot run nsenter");
    assert!(status.success(), "cannot set ns_last_pid in the PID namespace of {pid}");
    last
}

#[test]
fn joining_a_pid_namespace_keeps_the_containers_own_cgroup_mount() {
    if !require_root("joining_a_pid_namespace_keeps_the_containers_own_cgroup_mount") {
        return;
    }
    if cgroup_layout().starts_with("v2") {
        eprintln!("the cgroup mount is one cgroup2 mount on {}; this test covers the v1 hierarchies", cgroup_layout());
        return;
    }
    let first = Bundle::busybox("pidns-a", &["sleep", "300"]);
    let berth = Berth::new("pidns");
    let a = container_id("pidns-a");
    berth.ok(&["run", "-d", "-b", first.path().to_str().unwrap(), &a]);
    let pid = berth.state(&a)["pid"].as_i64().unwrap();
    let last = skip_pids_the_host_uses(pid);

    // What a pod with shareProcessNamespace gives each container: the sandbox's PID
    // namespace by path, and runc's default cgroup mount (read-only).
    let script = "echo self=$$; echo first=$(tr '\\0' ' ' < /proc/1/cmdline); \
        ls /sys/fs/cgroup | sed 's/^/entry=/'; \
        echo limit=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes); \
        for p in $(cat /sys/fs/cgroup/memory/cgroup.procs); do echo proc=$p; done; \
        grep ' /sys/fs/cgroup/memory ' /proc/self/mountinfo | cut -d' ' -f4 | sed 's/^/root=/'; \
        { echo 1073741824 > /sys/fs/cgroup/memory/memory.limit_in_bytes; } 2>&1 | sed 's/^/write=/'";
    let mut second = Bundle::busybox("pidns-b", &["sh", "-c", script]);
    second.spec["linux"]["namespaces"] = json!([
        {"type": "pid", "path": format!("/proc/{pid}/ns/pid")},
        {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}
    ]);
    second.spec["linux"]["resources"]["memory"] = json!({"limit": 50331648});
    second.spec["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
        "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]
    }));
    second.write_spec();
    let b = container_id("pidns-b");
    let out = run_id_ok(&berth, &second, &b);
    let values = |key: &str| -> Vec<String> {
        out.lines().filter_map(|l| l.strip_prefix(&format!("{key}=")).map(String::from)).collect()
    };
    let own: i64 = values("self")[0].parse().unwrap();
    assert!(
        own > last,
        "the container's shell {own} is not in the first container's PID namespace (past {last}): {out}"
    );
    assert_eq!(values("first"), ["sleep 300"], "the first container's process is not pid 1 there: {out}");
    assert_eq!(values("entry").into_iter().collect::<BTreeSet<_>>(), host_cgroup_v1_entries(), "{out}");
    assert_eq!(values("limit"), ["50331648"], "the memory cgroup shown is not the container's own: {out}");
    let procs = values("proc");
    assert!(procs.contains(&own.to_string()) && !procs.contains(&"1".to_string()), "cgroup.procs {procs:?}: {out}");
    assert_eq!(values("root"), [second.cgroups_path()], "{out}");
    let write = values("write");
    assert!(
        write.len() == 1 && write[0].contains("Read-only file system"),
        "the write was not refused as read-only: {out}"
    );
    let limit = format!("/sys/fs/cgroup/memory{}/memory.limit_in_bytes", second.cgroups_path());
    assert_eq!(std::fs::read_to_string(limit).ok(), None, "run left the container's cgroup");

    // berth binds the hierarchies after the other mounts: it refuses to hide one below.
    second.spec["linux"]["maskedPaths"].as_array_mut().unwrap().push(json!("/sys/fs/cgroup/memory"));
    second.set_args(&["true"]);
    let (code, _, stderr) = berth.run_bundle(second.path(), &container_id("pidns-masked"));
    assert_eq!(code, 1);
    assert!(stderr.contains("masked path /sys/fs/cgroup/memory"), "{stderr}");
    berth.ok(&["delete", "-f", &a]);
}

/// A network namespace of the test's own, held by a sleeping process, killed (by pid) on drop.
struct HeldNetns {
    holder: std::process::Child,
}

impl HeldNetns {
    fn new() -> HeldNetns {
        let holder = Command::new("unshare").args(["-n", "sleep", "300"]).spawn().expect("cannot run unshare -n");
        let path = format!("/proc/{}/ns/net", holder.id());
        // unshare replaces itself with sleep once the namespace exists.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_link(&path).ok() == std::fs::read_link("/proc/self/ns/net").ok() {
            assert!(std::time::Instant::now() < deadline, "unshare -n never made its network namespace");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        HeldNetns { holder }
    }

    fn path(&self) -> String {
        format!("/proc/{}/ns/net", self.holder.id())
    }
}

impl Drop for HeldNetns {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// The flags `ip link show lo` prints between angle brackets, e.g. `LOOPBACK,UP,LOWER_UP`.
fn link_flags(ip_link_output: &str) -> Vec<String> {
    let flags =
        ip_link_output.split_once('<').and_then(|(_, rest)| rest.split_once('>')).map(|(flags, _)| flags).unwrap_or("");
    flags.split(',').map(String::from).collect()
}

#[test]
fn loopback_is_up_in_a_new_network_namespace_and_untouched_in_a_joined_one() {
    if !require_root("loopback_is_up_in_a_new_network_namespace_and_untouched_in_a_joined_one") {
        return;
    }
    // busybox ping needs a raw socket: CAP_NET_RAW, which runc's default spec also grants.
    let mut bundle =
        Bundle::busybox("lo", &["sh", "-c", "ip link show lo; ping -c1 -W2 127.0.0.1 >/dev/null && echo ping=ok"]);
    for set in ["bounding", "effective", "permitted"] {
        bundle.spec["process"]["capabilities"][set].as_array_mut().unwrap().push(json!("CAP_NET_RAW"));
    }
    // berth enters the container's namespace to bring lo up: the hooks after it (run by
    // berth, in the runtime's namespace) must find berth back in the host's.
    let hook_dir = TempDir::new("berth-lo-hook");
    let hook_netns = hook_dir.path().join("netns");
    bundle.spec["hooks"] = json!({"poststart": [{"path": "/bin/sh", "args": ["sh", "-c",
        format!("readlink /proc/self/ns/net > {}", hook_netns.display())]}]});
    bundle.write_spec();
    let berth = Berth::new("lo");
    let out = run_ok(&berth, &bundle, "lo");
    assert!(
        link_flags(&out).contains(&"UP".to_string()),
        "lo is not up in the container's new network namespace: {out}"
    );
    assert!(out.contains("ping=ok"), "127.0.0.1 does not answer inside the container: {out}");
    let host_netns = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_eq!(
        std::fs::read_to_string(&hook_netns).unwrap().trim(),
        host_netns.to_str().unwrap(),
        "the poststart hook ran outside the host's network namespace"
    );
    bundle.spec.as_object_mut().unwrap().remove("hooks");

    // Joined by path, the namespace belongs to someone else: its lo stays as it was (down).
    let held = HeldNetns::new();
    bundle.spec["linux"]["namespaces"] = json!([
        {"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}, {"type": "network", "path": held.path()}
    ]);
    bundle.set_args(&["ip", "link", "show", "lo"]);
    let out = run_ok(&berth, &bundle, "lo-joined");
    assert!(out.contains("LOOPBACK"), "{out}");
    assert!(!link_flags(&out).contains(&"UP".to_string()), "berth brought up lo in a namespace it joined: {out}");
    let from_outside = Command::new("nsenter")
        .arg(format!("--net={}", held.path()))
        .args(["ip", "-o", "link", "show", "lo"])
        .output()
        .unwrap();
    let from_outside = String::from_utf8_lossy(&from_outside.stdout);
    assert!(
        !link_flags(&from_outside).contains(&"UP".to_string()),
        "the joined namespace's lo changed: {from_outside}"
    );
}

#[test]
fn user_namespace_maps_ids() {
    if !require_root("user_namespace_maps_ids") {
        return;
    }
    let mut bundle = Bundle::busybox(
        "userns",
        &["sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; id -u; readlink /proc/self/ns/user"],
    );
    // The rootfs must be usable by the mapped root.
    chown_tree(&bundle.rootfs(), 100000, 100000);
    bundle.spec["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "user"}));
    bundle.spec["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    bundle.spec["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    // sysfs cannot be mounted in a user namespace without a network namespace of its own; keep it.
    bundle.write_spec();
    let berth = Berth::new("userns");
    let out = run_ok(&berth, &bundle, "userns");
    let fields: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(fields[0], ["0", "100000", "65536"], "{out}");
    assert_eq!(fields[1], ["0", "100000", "65536"], "{out}");
    assert_eq!(fields[2], ["0"]);
    assert_ne!(fields[3][0], host_link("user"));
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    let status = Command::new("chown").args(["-R", "-h", &format!("{uid}:{gid}")]).arg(path).status().unwrap();
    assert!(status.success());
}

/// runc makes a missing process.cwd (images name WorkingDirs their layers never made); a
/// symlink in the rootfs cannot lead that mkdir out of it.
#[test]
fn a_missing_working_directory_is_made_inside_the_rootfs() {
    if !require_root("a_missing_working_directory_is_made_inside_the_rootfs") {
        return;
    }
    let mut bundle = Bundle::busybox("cwd", &["sh", "-c", "pwd; stat -c '%a %u' ."]);
    bundle.spec["process"]["cwd"] = json!("/srv/app/data");
    bundle.write_spec();
    let berth = Berth::new("cwd");
    let out = run_ok(&berth, &bundle, "cwd");
    assert_eq!(out, "/srv/app/data\n755 0\n");
    assert!(bundle.rootfs().join("srv/app/data").is_dir());

    // A symlink whose target is a host path resolves inside the rootfs, where it dangles:
    // create fails and names the path; nothing appears on the host.
    let outside = TempDir::new("berth-cwd-outside");
    std::os::unix::fs::symlink(outside.path(), bundle.rootfs().join("escape")).unwrap();
    bundle.spec["process"]["cwd"] = json!("/escape/made");
    bundle.write_spec();
    let (code, _, stderr) = berth.run_bundle(bundle.path(), &container_id("cwd-escape"));
    assert_ne!(code, 0);
    assert!(stderr.contains("working directory /escape"), "{stderr}");
    assert!(!outside.path().join("made").exists());
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
}

#[test]
fn identity_environment_and_privileges() {
    if !require_root("identity_environment_and_privileges") {
        return;
    }
    let mut bundle = Bundle::busybox(
        "ident",
        &["sh", "-c", "hostname; echo GREETING=$GREETING; pwd; id -u; id -g; id -G; grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status; ulimit -n; ulimit -Hn"],
    );
    bundle.spec["hostname"] = json!("berth-box");
    bundle.spec["process"]["env"].as_array_mut().unwrap().push(json!("GREETING=hello world"));
    bundle.spec["process"]["cwd"] = json!("/home/app");
    bundle.spec["process"]["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [2000, 3000]});
    let caps = json!(["CAP_NET_RAW", "CAP_CHOWN"]);
    for set in ["bounding", "effective", "permitted"] {
        bundle.spec["process"]["capabilities"][set] = caps.clone();
    }
    bundle.spec["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 321, "hard": 654}]);
    bundle.spec["process"]["noNewPrivileges"] = json!(true);
    bundle.write_spec();
    let berth = Berth::new("ident");
    let out = run_ok(&berth, &bundle, "ident");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "berth-box");
    assert_eq!(lines[1], "GREETING=hello world");
    assert_eq!(lines[2], "/home/app");
    assert_eq!(lines[3], "1000");
    assert_eq!(lines[4], "1000");
    let mut groups: Vec<&str> = lines[5].split_whitespace().collect();
    groups.sort();
    assert_eq!(groups, ["1000", "2000", "3000"]);
    // CAP_CHOWN is bit 0 and CAP_NET_RAW bit 13: 0x2001. A non-root user has no effective
    // caps without ambient ones; the bounding set is the configured one.
    assert!(out.contains("CapBnd:\t0000000000002001"), "{out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert_eq!(&lines[lines.len() - 2..], ["321", "654"]);

    // As root the effective set is exactly the configured one.
    bundle.spec["process"]["user"] = json!({"uid": 0, "gid": 0});
    bundle.set_args(&["grep", "CapEff", "/proc/self/status"]);
    assert_eq!(run_ok(&berth, &bundle, "ident-root").trim(), "CapEff:\t0000000000002001");
}

#[test]
fn mounts_bind_tmpfs_readonly_masked_and_proc_sys_dev() {
    if !require_root("mounts_bind_tmpfs_readonly_masked_and_proc_sys_dev") {
        return;
    }
    let shared = TempDir::new("berth-bind-rw");
    let readonly = TempDir::new("berth-bind-ro");
    std::fs::write(readonly.path().join("given"), "from host").unwrap();
    let script = [
        "echo written > /rw/out",
        "cat /ro/given; echo",
        "touch /ro/nope 2>/dev/null && echo ro-writable || echo ro-refused",
        "grep ' /scratch ' /proc/mounts",
        "touch /rootfile 2>/dev/null && echo root-writable || echo root-refused",
        "touch /scratch/ok && echo tmpfs-writable",
        "wc -c < /proc/timer_list",
        "echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo sys-writable || echo sys-refused",
        "ls /sys/kernel >/dev/null && echo sysfs-ok",
        "test -c /dev/null && test -c /dev/zero && test -c /dev/urandom && test -c /dev/tty && echo dev-ok",
        "grep -c ' /proc proc ' /proc/mounts",
    ]
    .join("; ");
    let mut bundle = Bundle::busybox("mounts", &["sh", "-c", &script]);
    for dir in ["rw", "ro", "scratch"] {
        std::fs::create_dir(bundle.rootfs().join(dir)).unwrap();
    }
    let mounts = bundle.spec["mounts"].as_array_mut().unwrap();
    mounts.push(json!({"destination": "/rw", "type": "bind", "source": shared.path(), "options": ["rbind", "rw"]}));
    mounts.push(json!({"destination": "/ro", "type": "bind", "source": readonly.path(), "options": ["rbind", "ro"]}));
    mounts.push(
        json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["size=2m", "mode=1777"]}),
    );
    bundle.spec["root"]["readonly"] = json!(true);
    bundle.write_spec();
    let berth = Berth::new("mounts");
    let out = run_ok(&berth, &bundle, "mounts");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(std::fs::read_to_string(shared.path().join("out")).unwrap(), "written\n");
    assert_eq!(lines[0], "from host");
    assert_eq!(lines[1], "ro-refused");
    assert!(lines[2].contains("tmpfs") && lines[2].contains("size=2048k"), "{}", lines[2]);
    assert_eq!(lines[3], "root-refused");
    assert_eq!(lines[4], "tmpfs-writable");
    assert_eq!(lines[5], "0", "masked /proc/timer_list reads empty");
    assert!(!std::fs::read("/proc/timer_list").unwrap().is_empty(), "the host's /proc/timer_list is not empty");
    assert_eq!(lines[6], "sys-refused");
    assert_eq!(lines[7], "sysfs-ok");
    assert_eq!(lines[8], "dev-ok");
    assert_eq!(lines[9], "1");
    assert!(!readonly.path().join("nope").exists());
}

#[test]
fn slave_propagation_shows_host_mounts_made_later() {
    if !require_root("slave_propagation_shows_host_mounts_made_later") {
        return;
    }
    let source = TempDir::new("berth-prop");
    // A shared mount of our own, so propagation does not depend on how / is mounted here.
    let mounted = MountGuard::bind_shared(source.path());
    std::fs::create_dir(source.path().join("sub")).unwrap();
    let mut bundle = Bundle::busybox(
        "prop",
        &["sh", "-c", "echo ready > /prop/ready; i=0; while [ $i -lt 200 ]; do grep -q ' /prop/sub ' /proc/mounts && echo seen && exit 0; sleep 0.05; i=$((i+1)); done; exit 1"],
    );
    std::fs::create_dir(bundle.rootfs().join("prop")).unwrap();
    bundle.spec["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/prop", "type": "bind", "source": source.path(), "options": ["rbind", "rslave"]}));
    bundle.write_spec();
    let berth = Berth::new("prop");
    let id = container_id("prop");
    let child = berth
        .command(&["run", "-b", bundle.path().to_str().unwrap(), &id])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ready = source.path().join("ready");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !ready.exists() {
        assert!(std::time::Instant::now() < deadline, "container never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let sub = MountGuard::tmpfs(&source.path().join("sub"));
    let out = child.wait_with_output().unwrap();
    drop(sub);
    drop(mounted);
    assert_eq!(out.status.code(), Some(0), "the host's new mount did not propagate into the container");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "seen\n");
}

/// A mount made by a test, unmounted (lazily) when dropped.
struct MountGuard(std::path::PathBuf);

impl MountGuard {
    fn bind_shared(path: &Path) -> MountGuard {
        use nix::mount::{mount, MsFlags};
        mount(Some(path), path, None::<&str>, MsFlags::MS_BIND, None::<&str>).unwrap();
        let guard = MountGuard(path.to_path_buf());
        mount(None::<&str>, path, None::<&str>, MsFlags::MS_SHARED, None::<&str>).unwrap();
        guard
    }

    fn tmpfs(path: &Path) -> MountGuard {
        nix::mount::mount(Some("tmpfs"), path, Some("tmpfs"), nix::mount::MsFlags::empty(), Some("size=1m")).unwrap();
        MountGuard(path.to_path_buf())
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn containers_get_a_session_keyring_of_their_own() {
    if !require_root("containers_get_a_session_keyring_of_their_own") {
        return;
    }
    // /proc/keys is masked by default; unmask it to see which keyrings the process holds.
    let mut bundle = Bundle::busybox("keyring", &["cat", "/proc/keys"]);
    bundle.spec["linux"]["maskedPaths"] = json!([]);
    bundle.spec["linux"]["readonlyPaths"] = json!([]);
    bundle.write_spec();
    let berth = Berth::new("keyring");
    let id = container_id("keyring");
    let keys = run_id_ok(&berth, &bundle, &id);
    assert!(keys.contains(&format!("_ses.{id}")), "no keyring of the container's own: {keys}");

    let other = container_id("nokeyring");
    let out = berth.output(&["run", "--no-new-keyring", "-b", bundle.path().to_str().unwrap(), &other]);
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&format!("_ses.{other}")));
}

#[test]
fn advertised_mount_options_take_effect() {
    if !require_root("advertised_mount_options_take_effect") {
        return;
    }
    // Each option on a tmpfs of its own, then what the kernel shows for it in mountinfo:
    // (option, text expected in the per-mount options or optional fields).
    let cases: &[(&[&str], &str)] = &[
        (&["ro"], "ro"),
        (&["rw"], "rw"),
        (&["nosuid"], "nosuid"),
        (&["nodev"], "nodev"),
        (&["noexec"], "noexec"),
        (&["noatime"], "noatime"),
        (&["nodiratime"], "nodiratime"),
        (&["relatime"], "relatime"),
    ];
    let mut bundle = Bundle::busybox("mountopts", &["cat", "/proc/self/mountinfo"]);
    for (n, (options, _)) in cases.iter().enumerate() {
        std::fs::create_dir_all(bundle.rootfs().join(format!("m/{n}"))).unwrap();
        bundle.spec["mounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"destination": format!("/m/{n}"), "type": "tmpfs", "source": "tmpfs", "options": options}));
    }
    // Propagation, on bind mounts of a shared source: (option, optional field shown).
    let propagation: &[(&str, &str)] = &[
        ("shared", "shared:"),
        ("rshared", "shared:"),
        ("slave", "master:"),
        ("rslave", "master:"),
        ("unbindable", "unbindable"),
        ("runbindable", "unbindable"),
        ("private", ""),
        ("rprivate", ""),
    ];
    let source = TempDir::new("berth-mountopts-src");
    let shared_source = MountGuard::bind_shared(source.path());
    for (option, _) in propagation {
        std::fs::create_dir_all(bundle.rootfs().join(format!("p/{option}"))).unwrap();
        bundle.spec["mounts"].as_array_mut().unwrap().push(json!({"destination": format!("/p/{option}"), "type": "bind", "source": source.path(), "options": ["bind", option]}));
    }
    bundle.write_spec();
    let berth = Berth::new("mountopts");
    let info = run_ok(&berth, &bundle, "mountopts");
    drop(shared_source);
    let line_for = |point: &str| -> String {
        info.lines()
            .find(|l| l.split_whitespace().nth(4) == Some(point))
            .unwrap_or_else(|| panic!("{point} not mounted:\n{info}"))
            .to_string()
    };
    for (n, (options, shown)) in cases.iter().enumerate() {
        let line = line_for(&format!("/m/{n}"));
        let (before, _) = line.split_once(" - ").unwrap();
        let fields: Vec<&str> = before.split_whitespace().collect();
        let mount_options: Vec<&str> = fields[5].split(',').collect();
        let optional = &fields[6..];
        let seen = mount_options.contains(shown) || optional.iter().any(|f| f.starts_with(shown));
        assert!(seen, "option {options:?} not in effect: {line}");
    }
    for (option, shown) in propagation {
        let line = line_for(&format!("/p/{option}"));
        let optional: Vec<&str> = line.split_once(" - ").unwrap().0.split_whitespace().skip(6).collect();
        if shown.is_empty() {
            assert!(optional.is_empty(), "{option}: still propagating: {line}");
        } else {
            assert!(optional.iter().any(|f| f.starts_with(shown)), "{option}: {line}");
        }
    }
}
