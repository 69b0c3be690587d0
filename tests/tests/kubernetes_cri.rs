//! Kubernetes' path to berth: containerd's CRI plugin (Debian's 1.6, started privately)
//! runs pods on berth's shim and berth-cni, driven only through the CRI API as a kubelet
//! drives it. Two pods from multi-layer images in containerd's store reach each other by pod
//! IP; a hostPort answers a test host; ExecSync, container logs, exit codes and reasons
//! (OOMKilled included), StopContainer's grace period, UpdateContainerResources, the
//! RuntimeDefault seccomp profile and a read-only root filesystem behave as kubelet expects;
//! removing the pods leaves no shim, mount, cgroup, veth, address or rule. Both runtime
//! handlers (berth's shim, and containerd's runc shim with BinaryName = berth) pass the same
//! test, each inside private network and mount namespaces the test creates.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use berth_tests::containerd::mounts_below;
use berth_tests::cri_node::{CriNode, BERTH_SHIM, RUNC_SHIM_BERTH};
use berth_tests::oci_image::{LayerDir, OciArchive};
use berth_tests::private_namespaces;
use berth_tests::privilege::{have_program, missing, require_root};
use k8s_cri::v1::*;

const INSIDE: &str = "BERTH_CRI_INSIDE";
const WEB_IMAGE: &str = "berth.test/web:1";
const TOOLS_IMAGE: &str = "berth.test/tools:1";

#[test]
fn pods_run_through_cri_on_berths_shim() {
    run("pods_run_through_cri_on_berths_shim", BERTH_SHIM);
}

#[test]
fn pods_run_through_cri_on_the_runc_shim_driving_berth() {
    run("pods_run_through_cri_on_the_runc_shim_driving_berth", RUNC_SHIM_BERTH);
}

fn run(test: &str, handler: &'static str) {
    if std::env::var_os(INSIDE).is_none() {
        if !require_root(test) {
            return;
        }
        if !have_program("containerd") || !have_program("containerd-shim-runc-v2") {
            missing(test, "Debian's containerd (make deps installs it)");
            return;
        }
    }
    // A cgroup parent per handler: the two tests run at once, each checks its parent is left empty.
    private_namespaces::run(test, INSIDE, "bcri", Some(&format!("cri-{handler}")), |dir| pods_on(dir, handler));
}

fn sh(script: &str) -> String {
    let out = Command::new("sh").arg("-ec").arg(script).output().unwrap();
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Images of several layers, as a registry would hold them: busybox, then content.
fn images() -> Vec<OciArchive> {
    vec![
        OciArchive::build(
            WEB_IMAGE,
            &[
                LayerDir::busybox(),
                LayerDir::new().file("www/index.html", "hello from pod web\n"),
                LayerDir::new().file("etc/web.conf", "port=80\n"),
            ],
            &["httpd", "-f", "-p", "80", "-h", "/www"],
        ),
        OciArchive::build(TOOLS_IMAGE, &[LayerDir::busybox(), LayerDir::new().file("etc/tools", "tools\n")], &["sh"]),
    ]
}

/// The whole pod lifecycle on `handler` ("" selects the node's default, berth's shim).
fn pods_on(dir: &Path, handler: &str) {
    let node = CriNode::start(dir);
    for image in images() {
        node.containerd.import(&image);
    }
    let handler = if handler == BERTH_SHIM { "" } else { handler };
    // A test host joined to the node: 192.0.2.2 there, 192.0.2.1 here.
    sh("ip netns add th && ip link add th0 type veth peer name eth0 netns th
        ip addr add 192.0.2.1/24 dev th0 && ip link set th0 up
        ip -n th addr add 192.0.2.2/24 dev eth0 && ip -n th link set eth0 up && ip -n th link set lo up");
    let cri = &node.cri;

    // Pod "web" publishes container port 80 on the node's port 8080.
    let web_pod_config = node.pod_config(
        "web",
        vec![PortMapping {
            protocol: Protocol::Tcp as i32,
            container_port: 80,
            host_port: 8080,
            host_ip: String::new(),
        }],
    );
    let web_pod = cri.run_pod(&web_pod_config, handler).unwrap();
    let web = cri.start_container(&web_pod, &web_pod_config, &node.container_config("web", WEB_IMAGE, &[])).unwrap();

    // Pod "client": RuntimeDefault seccomp, a read-only root filesystem, a memory limit.
    let client_pod_config = node.pod_config("client", vec![]);
    let client_pod = cri.run_pod(&client_pod_config, handler).unwrap();
    let mut client_config = node.container_config("client", TOOLS_IMAGE, &["sleep", "3600"]);
    let linux = client_config.linux.get_or_insert_with(Default::default);
    let security = linux.security_context.get_or_insert_with(Default::default);
    security.seccomp = Some(SecurityProfile {
        profile_type: security_profile::ProfileType::RuntimeDefault as i32,
        ..Default::default()
    });
    security.readonly_rootfs = true;
    linux.resources =
        Some(LinuxContainerResources { memory_limit_in_bytes: 128 << 20, cpu_shares: 1024, ..Default::default() });
    let client = cri.start_container(&client_pod, &client_pod_config, &client_config).unwrap();

    // Across pods by pod IP, and the hostPort from the test host.
    let web_ip = cri.pod_ip(&web_pod).unwrap();
    let client_ip = cri.pod_ip(&client_pod).unwrap();
    assert!(
        web_ip.starts_with("10.244.") && client_ip.starts_with("10.244.") && web_ip != client_ip,
        "{web_ip} {client_ip}"
    );
    // httpd may still be binding its port just after StartContainer: a few tries.
    let fetch = || cri.exec_sync(&client, &["timeout", "5", "wget", "-qO-", &format!("http://{web_ip}/")]).unwrap();
    let mut page = fetch();
    for _ in 0..20 {
        if page.0 == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        page = fetch();
    }
    assert_eq!(page, (0, "hello from pod web\n".to_string(), String::new()));
    let from_test_host = sh("ip netns exec th timeout 5 busybox wget -qO- http://192.0.2.1:8080/");
    assert_eq!(from_test_host, "hello from pod web\n");

    // ExecSync: output on both streams and the exit code.
    let exec = cri.exec_sync(&client, &["sh", "-c", "cat /etc/tools; echo err >&2; exit 3"]).unwrap();
    assert_eq!(exec, (3, "tools\n".to_string(), "err\n".to_string()));

    // The security context: seccomp in filter mode only where RuntimeDefault was asked for,
    // and the read-only root filesystem.
    let seccomp = |id: &str| cri.exec_sync(id, &["sh", "-c", "grep ^Seccomp: /proc/self/status"]).unwrap().1;
    assert_eq!(seccomp(&client), "Seccomp:\t2\n");
    assert_eq!(seccomp(&web), "Seccomp:\t0\n");
    let (code, _, err) = cri.exec_sync(&client, &["touch", "/written"]).unwrap();
    assert!(code != 0 && err.contains("Read-only file system"), "touch on a read-only rootfs: {code} {err}");
    assert_eq!(cri.exec_sync(&web, &["touch", "/written"]).unwrap().0, 0);

    // UpdateContainerResources reaches the container's cgroup.
    let memory_limit =
        || std::fs::read_to_string(node.cgroup("memory", &client).join("memory.limit_in_bytes")).unwrap();
    let cpu_shares = || std::fs::read_to_string(node.cgroup("cpu", &client).join("cpu.shares")).unwrap();
    assert_eq!((memory_limit(), cpu_shares()), (format!("{}\n", 128 << 20), "1024\n".to_string()));
    let update = LinuxContainerResources { memory_limit_in_bytes: 96 << 20, cpu_shares: 512, ..Default::default() };
    cri.update_resources(&client, update).unwrap();
    assert_eq!((memory_limit(), cpu_shares()), (format!("{}\n", 96 << 20), "512\n".to_string()));

    // Logs in kubelet's format where LogPath says, and a completed container's status.
    let logger_config =
        node.container_config("logger", TOOLS_IMAGE, &["sh", "-c", "echo to-stdout; echo to-stderr >&2"]);
    let logger = cri.start_container(&client_pod, &client_pod_config, &logger_config).unwrap();
    let status = cri.wait_exited(&logger, Duration::from_secs(30)).unwrap();
    assert_eq!((status.exit_code, status.reason.as_str()), (0, "Completed"));
    assert_log_lines(&node.log("client", "logger"), &[("stdout", "to-stdout"), ("stderr", "to-stderr")]);

    // A memory hog over its limit: OOMKilled.
    let mut hog_config = node.container_config("hog", TOOLS_IMAGE, &["sh", "-c", "a=x; while :; do a=$a$a; done"]);
    hog_config.linux.get_or_insert_with(Default::default).resources =
        Some(LinuxContainerResources { memory_limit_in_bytes: 32 << 20, ..Default::default() });
    let hog = cri.start_container(&client_pod, &client_pod_config, &hog_config).unwrap();
    let status = cri.wait_exited(&hog, Duration::from_secs(60)).unwrap();
    assert_eq!((status.exit_code, status.reason.as_str()), (137, "OOMKilled"), "{status:?}");

    // StopContainer: SIGTERM first; a container that finishes within the grace period
    // exits on its own, one that does not is killed when it ends.
    let graceful = cri
        .start_container(
            &client_pod,
            &client_pod_config,
            &term_handler("graceful", &node, "sleep 1; echo cleaned up; exit 0"),
        )
        .unwrap();
    let stubborn = cri
        .start_container(&client_pod, &client_pod_config, &term_handler("stubborn", &node, "echo got TERM"))
        .unwrap();
    wait_for_log(&node, "graceful", "waiting");
    wait_for_log(&node, "stubborn", "waiting");
    cri.stop_container(&graceful, 10).unwrap();
    let status = cri.container_status(&graceful).unwrap();
    assert_eq!((status.exit_code, status.reason.as_str()), (0, "Completed"), "{}", node.log("client", "graceful"));
    assert!(node.log("client", "graceful").contains(" F cleaned up\n"), "{}", node.log("client", "graceful"));
    cri.stop_container(&stubborn, 2).unwrap();
    let status = cri.container_status(&stubborn).unwrap();
    assert_eq!((status.exit_code, status.reason.as_str()), (137, "Error"));
    assert!(node.log("client", "stubborn").contains(" F got TERM\n"), "{}", node.log("client", "stubborn"));
    for id in [&logger, &hog, &graceful, &stubborn] {
        cri.remove_container(id).unwrap();
    }

    // Removing the pods leaves nothing behind.
    cri.remove_pod(&web_pod).unwrap();
    cri.remove_pod(&client_pod).unwrap();
    assert_nothing_left(&node, &[&web_pod, &client_pod], &[&web_ip, &client_ip]);
}

/// A container that logs `waiting`, then sleeps in a loop; on SIGTERM it runs `on_term`.
fn term_handler(name: &str, node: &CriNode, on_term: &str) -> ContainerConfig {
    let script = format!("trap '{on_term}' TERM; echo waiting; while :; do sleep 1; done");
    node.container_config(name, TOOLS_IMAGE, &["sh", "-c", &script])
}

fn wait_for_log(node: &CriNode, name: &str, line: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !node.log("client", name).contains(&format!(" F {line}\n")) {
        assert!(std::time::Instant::now() < deadline, "{name} never logged {line}: {:?}", node.log("client", name));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// kubelet's log format: `TIMESTAMP STREAM F LINE` per full line, in order.
fn assert_log_lines(log: &str, expected: &[(&str, &str)]) {
    let lines: Vec<(String, String)> = log
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.splitn(4, ' ').collect();
            assert_eq!(fields.len(), 4, "not a CRI log line: {line:?}");
            assert!(
                fields[0].contains('T') && fields[0].ends_with('Z') || fields[0].contains('+'),
                "timestamp: {line:?}"
            );
            assert_eq!(fields[2], "F", "a partial line in {log:?}");
            (fields[1].to_string(), fields[3].to_string())
        })
        .collect();
    let mut expected: Vec<(String, String)> = expected.iter().map(|(s, l)| (s.to_string(), l.to_string())).collect();
    let mut got = lines.clone();
    // The two streams are separate pipes: their relative order is not kept.
    expected.sort();
    got.sort();
    assert_eq!(got, expected, "{log}");
}

/// No shim, mount, cgroup, veth, address or firewall rule of the removed pods.
fn assert_nothing_left(node: &CriNode, pods: &[&str], ips: &[&str]) {
    let socket = node.containerd.socket().display().to_string();
    let shims: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|p| std::fs::read(p.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("containerd-shim") && c.contains(&socket))
        .collect();
    assert_eq!(shims, Vec::<String>::new(), "shims left running");
    for dir in [node.containerd.dir.path(), Path::new("/run/containerd")] {
        let left: Vec<_> = mounts_below(dir).into_iter().filter(|(point, _)| !point.ends_with("netns")).collect();
        assert_eq!(left, vec![], "mounts left below {}", dir.display());
    }
    for mount in berth_tests::runtime::cgroup_mounts() {
        let parent = mount.join(&node.cgroup_parent);
        let children: Vec<_> =
            std::fs::read_dir(&parent).into_iter().flatten().flatten().filter(|e| e.path().is_dir()).collect();
        assert!(children.is_empty(), "cgroups left in {}: {children:?}", parent.display());
    }
    let veths = sh("ip -o link show type veth | grep -v ' th0@' || true");
    assert_eq!(veths, "", "veths left");
    let addresses = sh(&format!(
        "ls {} | grep -c '^10\\.' || true",
        node.cni.state.join("ipam").join(berth_tests::cri_node::POD_NETWORK).display()
    ));
    assert_eq!(addresses.trim(), "0", "addresses left allocated");
    let rules = sh("{ iptables-save; nft list ruleset; } || true");
    for needle in pods.iter().map(|p| &p[..12]).chain(ips.iter().copied()) {
        assert!(!rules.contains(needle), "rules of {needle} left:\n{rules}");
    }
}
