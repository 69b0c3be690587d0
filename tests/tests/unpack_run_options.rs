//! `berth-image unpack` with `docker run`'s options, end to end: each option is checked in
//! the bundle's config.json and then where a user sees it, inside the container run by
//! `berth run` (env, user and groups, cwd, hostname, /etc/hosts, /etc/resolv.conf,
//! capabilities, read-only root, devices, cgroup limits); one bundle also runs with runc.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use berth_tests::fixtures::{container_id, TempDir};
use berth_tests::image_store::ImageStore;
use berth_tests::oci_image::{LayerDir, OciArchive};
use berth_tests::privilege::{have_program, missing, require_root};
use berth_tests::runtime::Berth;
use serde_json::{json, Value};

const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A store holding a busybox image with `config`; returns the store and the image's name.
fn store_with_image(test: &str, config: Value) -> (ImageStore, String) {
    let store = ImageStore::new(test);
    let archive = OciArchive::build_with_config(&format!("berth.test/{test}:latest"), &[LayerDir::busybox()], config);
    let name = store.import(&archive);
    (store, name)
}

fn plain_image(test: &str) -> (ImageStore, String) {
    store_with_image(test, json!({"Env": [PATH], "Cmd": ["sh"]}))
}

/// Runs the bundle in the foreground with berth; returns its stdout (exit 0 asserted).
fn run(berth: &Berth, bundle: &Path, test: &str) -> String {
    let (code, stdout, stderr) = berth.run_bundle(bundle, &container_id(test));
    assert_eq!(code, 0, "the container failed: {stdout}{stderr}");
    stdout
}

fn files(dir: &Path, entries: &[(&str, &str)]) -> Vec<PathBuf> {
    entries
        .iter()
        .map(|(name, text)| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect()
}

/// A runc container under a private root, force-deleted on drop.
struct Runc {
    root: TempDir,
    id: String,
}

impl Drop for Runc {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .arg("--root")
            .arg(self.root.path())
            .args(["delete", "--force", &self.id])
            .stderr(Stdio::null())
            .status();
    }
}

const PROCESS_SCRIPT: &str =
    "echo \"FROM_IMAGE=$FROM_IMAGE OVER=$OVER FILEVAR=$FILEVAR FROM_HOST=$FROM_HOST\"; id; pwd; hostname; \
echo ---hostname; cat /etc/hostname; echo ---hosts; cat /etc/hosts; echo ---resolv; cat /etc/resolv.conf";

#[test]
fn process_and_init_layer_options_reach_the_container_with_berth_and_runc() {
    if !require_root("process_and_init_layer_options_reach_the_container_with_berth_and_runc") {
        return;
    }
    let (store, image) = store_with_image(
        "unpack-process",
        json!({
            "Entrypoint": ["/bin/echo", "image-entrypoint"], "Cmd": ["image-cmd"],
            "Env": [PATH, "FROM_IMAGE=1", "OVER=image"], "User": "nobody", "WorkingDir": "/srv", "StopSignal": "SIGQUIT"
        }),
    );
    let paths = files(
        store.dir(),
        &[
            ("env", "# comment\n\nFILEVAR=from file\nOVER=file\n"),
            ("host-resolv.conf", "nameserver 127.0.0.53\noptions edns0\n"),
            (
                "systemd-resolv.conf",
                "nameserver 127.0.0.1\nnameserver 192.0.2.53\nsearch example.test\noptions ndots:2\n",
            ),
        ],
    );
    let bundle = store.unpack(
        &image,
        "web-1",
        &[
            "--entrypoint",
            "/bin/sh",
            "--env-file",
            paths[0].to_str().unwrap(),
            "-e",
            "OVER=flag",
            "-e",
            "FROM_HOST",
            "-u",
            "app",
            "-w",
            "/work/dir",
            "--hostname",
            "h-opts",
            "--add-host",
            "db:192.0.2.10",
            "--add-host",
            "v6db:2001:db8::10",
            "--stop-signal",
            "USR1",
            "--stop-timeout",
            "7",
            "--",
            "-c",
            PROCESS_SCRIPT,
        ],
        &[
            ("FROM_HOST", "yes"),
            ("BERTH_HOST_RESOLV_CONF", paths[1].to_str().unwrap()),
            ("BERTH_SYSTEMD_RESOLV_CONF", paths[2].to_str().unwrap()),
        ],
    );
    let config = ImageStore::config(&bundle);
    let process = &config["process"];
    assert_eq!(process["args"], json!(["/bin/sh", "-c", PROCESS_SCRIPT]), "--entrypoint and the command");
    let env: Vec<&str> = process["env"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    for wanted in [PATH, "FROM_IMAGE=1", "OVER=flag", "FILEVAR=from file", "FROM_HOST=yes"] {
        assert!(env.contains(&wanted), "{wanted} missing from {env:?}");
    }
    assert_eq!(process["user"], json!({"uid": 1000, "gid": 1000, "additionalGids": [2000]}), "-u app");
    assert_eq!(process["cwd"], "/work/dir");
    assert_eq!(process["terminal"], false);
    assert_eq!(config["hostname"], "h-opts");
    let annotations = &config["annotations"];
    assert_eq!(annotations["org.opencontainers.image.stopSignal"], "SIGUSR1");
    assert_eq!(annotations["berth.stop-timeout"], "7");
    assert_eq!(annotations["berth.name"], "web-1", "the default name is the bundle directory's");
    for (file, destination) in
        [("hostname", "/etc/hostname"), ("hosts", "/etc/hosts"), ("resolv.conf", "/etc/resolv.conf")]
    {
        let mount = config["mounts"].as_array().unwrap().iter().find(|m| m["destination"] == destination);
        let mount = mount.unwrap_or_else(|| panic!("no mount at {destination}"));
        assert_eq!(mount["source"], bundle.join(file).to_str().unwrap());
        assert_eq!(mount["options"], json!(["rbind", "rprivate", "rw"]));
    }
    let hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n\
ff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n192.0.2.10\tdb\n2001:db8::10\tv6db\n\
127.0.1.1\th-opts web-1\n";
    assert_eq!(std::fs::read_to_string(bundle.join("hosts")).unwrap(), hosts);
    // The host's file names only the systemd stub, so systemd's upstream file is used, without its loopback server.
    let resolv = "nameserver 192.0.2.53\nsearch example.test\noptions ndots:2\n";
    assert_eq!(std::fs::read_to_string(bundle.join("resolv.conf")).unwrap(), resolv);
    let expected = format!(
        "FROM_IMAGE=1 OVER=flag FILEVAR=from file FROM_HOST=yes\nuid=1000(app) gid=1000(app) groups=2000(extra)\n\
/work/dir\nh-opts\n---hostname\nh-opts\n---hosts\n{hosts}---resolv\n{resolv}"
    );
    let berth = Berth::new("unpack-process");
    assert_eq!(run(&berth, &bundle, "unpack-process"), expected, "what the process saw under berth");
    // The bundle is plain OCI: runc runs it the same.
    if !have_program("runc") {
        missing("process_and_init_layer_options_reach_the_container_with_berth_and_runc", "runc");
        return;
    }
    let runc = Runc { root: TempDir::new("runc-root"), id: container_id("unpack-process-runc") };
    let out = Command::new("runc")
        .arg("--root")
        .arg(runc.root.path())
        .args(["run", "--bundle", bundle.to_str().unwrap(), &runc.id])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "runc run failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected, "what the process saw under runc");
}

#[test]
fn tty_option_gives_the_process_a_terminal() {
    if !require_root("tty_option_gives_the_process_a_terminal") {
        return;
    }
    let (store, image) = plain_image("unpack-tty");
    let bundle =
        store.unpack(&image, "tty", &["-t", "--", "sh", "-c", "[ -t 0 ] && [ -t 1 ] && echo \"tty TERM=$TERM\""], &[]);
    let config = ImageStore::config(&bundle);
    assert_eq!(config["process"]["terminal"], true);
    assert!(config["process"]["env"].as_array().unwrap().contains(&json!("TERM=xterm")));
    let berth = Berth::new("unpack-tty");
    let command = berth.command(&["run", "--bundle", bundle.to_str().unwrap(), &container_id("unpack-tty")]);
    let (output, code) = berth_tests::pty::run_on_a_pty(command, 24, 80);
    assert_eq!(code, Some(0), "the terminal container failed: {output}");
    assert!(output.contains("tty TERM=xterm"), "the process had no terminal: {output:?}");
}

#[test]
fn resource_limits_are_seen_in_the_container_cgroup() {
    if !require_root("resource_limits_are_seen_in_the_container_cgroup") {
        return;
    }
    let (store, image) = plain_image("unpack-limits");
    let script = "for f in memory/memory.limit_in_bytes memory/memory.memsw.limit_in_bytes cpu/cpu.cfs_quota_us \
cpu/cpu.cfs_period_us cpu/cpu.shares pids/pids.max; do echo \"$f $(cat /sys/fs/cgroup/$f)\"; done";
    let bundle = store.unpack(
        &image,
        "limits",
        &[
            "--memory",
            "64m",
            "--memory-swap",
            "96m",
            "--cpus",
            "0.5",
            "--cpu-shares",
            "512",
            "--pids-limit",
            "50",
            "--",
            "sh",
            "-c",
            script,
        ],
        &[],
    );
    let resources = &ImageStore::config(&bundle)["linux"]["resources"];
    assert_eq!(resources["memory"], json!({"limit": 64 << 20, "swap": 96 << 20}));
    assert_eq!(resources["cpu"], json!({"shares": 512, "quota": 50000, "period": 100000}));
    assert_eq!(resources["pids"], json!({"limit": 50}));
    let berth = Berth::new("unpack-limits");
    let expected = format!(
        "memory/memory.limit_in_bytes {}\nmemory/memory.memsw.limit_in_bytes {}\ncpu/cpu.cfs_quota_us 50000\n\
cpu/cpu.cfs_period_us 100000\ncpu/cpu.shares 512\npids/pids.max 50\n",
        64 << 20,
        96 << 20
    );
    assert_eq!(
        run(&berth, &bundle, "unpack-limits"),
        expected,
        "the container's cgroup ({})",
        berth_tests::runtime::cgroup_layout()
    );
}

/// The CapEff and CapBnd masks the process saw.
fn capability_masks(berth: &Berth, bundle: &Path, test: &str) -> (u64, u64) {
    let out = run(berth, bundle, test);
    let mask = |key: &str| {
        let line = out.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no {key} in {out}"));
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    (mask("CapEff:"), mask("CapBnd:"))
}

/// This test process's bounding set: what ALL grants (berth-image runs with the same).
fn own_bounding_set() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("CapBnd:")).unwrap();
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

fn bits(numbers: &[u32]) -> u64 {
    numbers.iter().map(|n| 1u64 << n).sum()
}

fn capability_names(config: &Value) -> Vec<String> {
    let mut names: Vec<String> = config["process"]["capabilities"]["bounding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn capabilities_follow_cap_add_and_cap_drop_as_docker() {
    if !require_root("capabilities_follow_cap_add_and_cap_drop_as_docker") {
        return;
    }
    let (store, image) = plain_image("unpack-caps");
    let script = ["--", "sh", "-c", "grep -E '^Cap(Eff|Bnd)' /proc/self/status"];
    let all = own_bounding_set();
    // Docker's default set: chown 0, dac_override 1, fowner 3, fsetid 4, kill 5, setgid 6, setuid 7,
    // setpcap 8, net_bind_service 10, net_raw 13, sys_chroot 18, mknod 27, audit_write 29, setfcap 31.
    let docker_default = bits(&[0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31]);
    let berth = Berth::new("unpack-caps");
    let cases: [(&str, &[&str], u64); 4] = [
        ("default", &[], docker_default),
        ("only-two", &["--cap-drop", "ALL", "--cap-add", "NET_ADMIN", "--cap-add", "cap_chown"], bits(&[12, 0])),
        ("all-but-mknod", &["--cap-add", "ALL", "--cap-drop", "MKNOD"], all & !bits(&[27])),
        ("drop-one", &["--cap-drop", "NET_RAW", "--cap-add", "SYS_TIME"], docker_default & !bits(&[13]) | bits(&[25])),
    ];
    for (name, options, mask) in cases {
        let args: Vec<&str> = options.iter().chain(script.iter()).copied().collect();
        let bundle = store.unpack(&image, name, &args, &[]);
        let config = ImageStore::config(&bundle);
        let caps = &config["process"]["capabilities"];
        assert_eq!(caps["effective"].as_array().unwrap().len(), mask.count_ones() as usize, "{name}: {caps}");
        if name == "only-two" {
            assert_eq!(capability_names(&config), ["CAP_CHOWN", "CAP_NET_ADMIN"]);
        }
        assert_eq!(capability_masks(&berth, &bundle, "unpack-caps"), (mask, mask), "{name}: CapEff and CapBnd");
    }
}

/// Opens a device node the cgroup must allow: mknod of /dev/loop-control's numbers, then a read open.
const DEVICE_SCRIPT: &str = "mknod /tmp/lc c 10 237; dd if=/tmp/lc of=/dev/null count=0 2>&1; echo open=$?; \
grep -c ' /proc/keys ' /proc/self/mountinfo; stat -c %t:%T /dev/loop-control 2>&1; grep CapEff /proc/self/status";

#[test]
fn privileged_allows_every_device_and_capability_and_masks_nothing() {
    let test = "privileged_allows_every_device_and_capability_and_masks_nothing";
    if !require_root(test) {
        return;
    }
    if !Path::new("/dev/loop-control").exists() {
        missing(test, "/dev/loop-control (the loop module)");
        return;
    }
    let (store, image) = plain_image("unpack-privileged");
    let berth = Berth::new("unpack-privileged");
    let default = store.unpack(&image, "default", &["--", "sh", "-c", DEVICE_SCRIPT], &[]);
    let out = run(&berth, &default, "unpack-privileged");
    assert!(
        out.contains("Operation not permitted") && out.contains("open=1\n1\nstat: can't stat '/dev/loop-control'"),
        "default container: {out}"
    );
    let privileged = store.unpack(&image, "privileged", &["--privileged", "--", "sh", "-c", DEVICE_SCRIPT], &[]);
    let config = ImageStore::config(&privileged);
    let linux = &config["linux"];
    assert_eq!(linux["maskedPaths"].as_array().map(Vec::len).unwrap_or(0), 0);
    assert_eq!(linux["readonlyPaths"].as_array().map(Vec::len).unwrap_or(0), 0);
    assert!(linux.get("seccomp").is_none_or(Value::is_null));
    assert_eq!(linux["resources"]["devices"], json!([{"allow": true, "access": "rwm"}]));
    let all = own_bounding_set();
    assert_eq!(config["process"]["capabilities"]["bounding"].as_array().unwrap().len(), all.count_ones() as usize);
    let devices = linux["devices"].as_array().unwrap();
    assert!(devices.iter().any(|d| d["path"] == "/dev/loop-control" && d["major"] == 10 && d["minor"] == 237));
    assert!(!devices.iter().any(|d| d["path"] == "/dev/null" || d["path"].as_str().unwrap().starts_with("/dev/pts/")));
    let out = run(&berth, &privileged, "unpack-privileged");
    let all = format!("{all:016x}");
    // The host's device nodes are there too (loop-control is 10:237).
    assert!(out.ends_with(&format!("open=0\n0\na:ed\nCapEff:\t{all}\n")), "privileged container: {out}");
}

#[test]
fn device_option_makes_the_node_and_allows_it_with_its_permissions() {
    let test = "device_option_makes_the_node_and_allows_it_with_its_permissions";
    if !require_root(test) {
        return;
    }
    if !Path::new("/dev/loop-control").exists() {
        missing(test, "/dev/loop-control (the loop module)");
        return;
    }
    let (store, image) = plain_image("unpack-device");
    let script = "stat -c '%t:%T %F %a' /dev/lc; dd if=/dev/lc of=/dev/null count=0 2>&1; echo read=$?; \
(echo x > /dev/lc) 2>&1; echo write=$?";
    let bundle =
        store.unpack(&image, "device", &["--device", "/dev/loop-control:/dev/lc:r", "--", "sh", "-c", script], &[]);
    let linux = &ImageStore::config(&bundle)["linux"];
    assert_eq!(
        linux["devices"],
        json!([{"path": "/dev/lc", "type": "c", "major": 10, "minor": 237, "fileMode": 0o600, "uid": 0, "gid": 0}])
    );
    let rules = linux["resources"]["devices"].as_array().unwrap();
    assert_eq!(rules.last().unwrap(), &json!({"allow": true, "type": "c", "major": 10, "minor": 237, "access": "r"}));
    let berth = Berth::new("unpack-device");
    let out = run(&berth, &bundle, "unpack-device");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "a:ed character special file 600", "the node: {out}");
    assert!(out.contains("read=0\n"), "reading was refused: {out}");
    assert!(out.contains("Operation not permitted\nwrite=1"), "writing was allowed though only r was given: {out}");
}

#[test]
fn read_only_root_refuses_writes_also_to_the_init_layer_files() {
    if !require_root("read_only_root_refuses_writes_also_to_the_init_layer_files") {
        return;
    }
    let (store, image) = plain_image("unpack-readonly");
    let script = "touch /new 2>&1; echo root=$?; (echo x >> /etc/hosts) 2>&1; echo hosts=$?";
    let bundle = store.unpack(&image, "ro", &["--read-only", "--", "sh", "-c", script], &[]);
    let config = ImageStore::config(&bundle);
    assert_eq!(config["root"]["readonly"], true);
    let hosts = config["mounts"].as_array().unwrap().iter().find(|m| m["destination"] == "/etc/hosts").unwrap();
    assert_eq!(hosts["options"], json!(["rbind", "rprivate", "ro"]));
    let out = run(&Berth::new("unpack-readonly"), &bundle, "unpack-readonly");
    assert!(out.contains("Read-only file system") && out.contains("root=1\n"), "the root took a write: {out}");
    assert!(out.trim_end().ends_with("hosts=1"), "/etc/hosts took a write: {out}");
}

#[test]
fn resolv_conf_falls_back_to_public_resolvers_and_dns_options_override() {
    if !require_root("resolv_conf_falls_back_to_public_resolvers_and_dns_options_override") {
        return;
    }
    let (store, image) = plain_image("unpack-dns");
    let host = files(store.dir(), &[("loopback-only", "nameserver 127.0.0.1\nnameserver ::1\nsearch host.test\n")]);
    let env = [("BERTH_HOST_RESOLV_CONF", host[0].to_str().unwrap())];
    let show = ["--", "cat", "/etc/resolv.conf"];
    let berth = Berth::new("unpack-dns");
    let fallback = store.unpack(&image, "fallback", &show, &env);
    let expected = "nameserver 8.8.8.8\nnameserver 8.8.4.4\nsearch host.test\n";
    assert_eq!(std::fs::read_to_string(fallback.join("resolv.conf")).unwrap(), expected);
    assert_eq!(run(&berth, &fallback, "unpack-dns"), expected);
    let options =
        ["--dns", "192.0.2.1", "--dns", "2001:db8::1", "--dns-search", "corp.test", "--dns-option", "ndots:3"];
    let args: Vec<&str> = options.iter().chain(show.iter()).copied().collect();
    let given = store.unpack(&image, "given", &args, &env);
    let expected = "nameserver 192.0.2.1\nnameserver 2001:db8::1\nsearch corp.test\noptions ndots:3\n";
    assert_eq!(std::fs::read_to_string(given.join("resolv.conf")).unwrap(), expected);
    assert_eq!(run(&berth, &given, "unpack-dns"), expected);
}
