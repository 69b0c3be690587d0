//! Bundles run by `berth run -d` on a network made by `berth-cni network create`, attached
//! by their own createRuntime/poststop hooks (`berth-cni hook add|del`): they reach each
//! other by name (ping and wget) in both start orders, through the hosts file each bundle
//! bind-mounts at /etc/hosts; one publishes a port a test host reaches; a deleted member
//! leaves the others' hosts files; nothing is left. All inside a private network and mount
//! namespace the test creates (`unshare -n -m`, a tmpfs on /run).

use std::path::Path;
use std::process::Command;

use berth_tests::bins::bin;
use berth_tests::cni_dirs::CniDirs;
use berth_tests::fixtures::{container_id, Bundle};
use berth_tests::plugin_dir;
use berth_tests::private_namespaces;
use berth_tests::privilege::require_root;
use berth_tests::runtime::Berth;
use serde_json::{json, Value};

const INSIDE: &str = "BERTH_CNI_NETWORKS_INSIDE";
const TEST: &str = "bundles_on_a_named_network_reach_each_other_by_name";

#[test]
fn bundles_on_a_named_network_reach_each_other_by_name() {
    if std::env::var_os(INSIDE).is_none() && !require_root(TEST) {
        return;
    }
    private_namespaces::run(TEST, INSIDE, "berth-cni-networks", None, run_inside);
}

fn sh(script: &str) -> String {
    let out = Command::new("sh").arg("-ec").arg(script).output().unwrap();
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A busybox bundle serving `hello from NAME` over HTTP on port 80, its own hosts file
/// bind-mounted at /etc/hosts, and hooks attaching it to `network` as NAME.
fn web_bundle(name: &str, network: &str, dirs: &CniDirs, publish: &[&str]) -> Bundle {
    let script = format!("mkdir -p /www && echo hello from {name} > /www/index.html && exec httpd -f -p 80 -h /www");
    let mut bundle = Bundle::busybox(name, &["sh", "-c", &script]);
    let hosts = bundle.path().join("hosts");
    std::fs::write(&hosts, format!("127.0.0.1\tlocalhost\n10.1.1.1\tadded-by-the-bundle-{name}\n")).unwrap();
    std::fs::write(bundle.rootfs().join("etc/hosts"), "").unwrap();
    bundle.spec["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/etc/hosts", "type": "bind", "source": hosts, "options": ["rbind", "rw"]}));
    // ping needs a raw socket, as Docker's default capabilities allow.
    for set in ["bounding", "effective", "permitted"] {
        bundle.spec["process"]["capabilities"][set].as_array_mut().unwrap().push(json!("CAP_NET_RAW"));
    }
    let berth_cni = bin("berth-cni").display().to_string();
    let mut add = vec!["berth-cni".to_string(), "hook".into(), "add".into(), network.into()];
    add.extend(["--name".into(), name.into(), "--hosts-file".into(), hosts.display().to_string()]);
    for spec in publish {
        add.extend(["--publish".into(), spec.to_string()]);
    }
    add.extend(dirs.flags());
    let mut del = vec!["berth-cni".to_string(), "hook".into(), "del".into(), network.into()];
    del.extend(dirs.flags());
    bundle.spec["hooks"] = json!({
        "createRuntime": [{"path": berth_cni, "args": add}],
        "poststop": [{"path": berth_cni, "args": del}]
    });
    bundle.write_spec();
    bundle
}

/// Runs `args` in the container; (exit code, stdout).
fn exec(berth: &Berth, id: &str, args: &[&str]) -> (i32, String) {
    let mut full = vec!["exec", id];
    full.extend(args);
    let out = berth.output(&full);
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `wget -qO- URL` in the container, retried while the server comes up.
fn wget(berth: &Berth, id: &str, url: &str) -> String {
    let mut last = (0, String::new());
    for _ in 0..50 {
        last = exec(berth, id, &["timeout", "5", "wget", "-qO-", url]);
        if last.0 == 0 {
            return last.1;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("wget {url} in {id} failed: {last:?}");
}

fn reach_each_other(berth: &Berth, (id_a, name_a): (&str, &str), (id_b, name_b): (&str, &str)) {
    for (from, to, to_name) in [(id_a, id_b, name_b), (id_b, id_a, name_a)] {
        let hosts = exec(berth, from, &["cat", "/etc/hosts"]).1;
        assert!(hosts.contains(&format!("\t{to_name}\n")), "{from} has no {to_name} in /etc/hosts:\n{hosts}");
        assert_eq!(exec(berth, from, &["ping", "-c1", "-W2", to_name]).0, 0, "{from} cannot ping {to_name} ({to})");
        assert_eq!(wget(berth, from, &format!("http://{to_name}/")), format!("hello from {to_name}\n"));
    }
}

fn stop_and_delete(berth: &Berth, id: &str) {
    berth.ok(&["kill", id, "KILL"]);
    berth.wait_status(id, "stopped");
    berth.ok(&["delete", id]);
}

/// The part that runs in the private namespaces; `dir` is the test's private directory.
fn run_inside(dir: &Path) {
    private_namespaces::make_run_and_var_lib_private();
    let dirs = CniDirs::under(dir);
    plugin_dir::fill(&dirs.bin, &bin("berth-cni"));
    dirs.ok(&["network", "create", "app"]);
    // A test host joined to this namespace: 192.0.2.2 there, 192.0.2.1 here.
    sh("ip netns add th && ip link add th0 type veth peer name eth0 netns th
        ip addr add 192.0.2.1/24 dev th0 && ip link set th0 up
        ip -n th addr add 192.0.2.2/24 dev eth0 && ip -n th link set eth0 up && ip -n th link set lo up");

    let berth = Berth::new("cni-networks");
    let web_a = web_bundle("web-a", "app", &dirs, &["8080:80"]);
    let web_b = web_bundle("web-b", "app", &dirs, &[]);
    let (id_a, id_b) = (container_id("web-a"), container_id("web-b"));
    let path = |b: &Bundle| b.path().to_str().unwrap().to_string();

    // a first, then b: b's file is written at its ADD; a's, already bind-mounted in a
    // running container, is rewritten in place.
    berth.ok(&["run", "-d", "-b", &path(&web_a), &id_a]);
    berth.ok(&["run", "-d", "-b", &path(&web_b), &id_b]);
    reach_each_other(&berth, (&id_a, "web-a"), (&id_b, "web-b"));
    let hosts_a = std::fs::read_to_string(web_a.path().join("hosts")).unwrap();
    assert!(
        hosts_a.starts_with("127.0.0.1\tlocalhost\n10.1.1.1\tadded-by-the-bundle-web-a\n# berth-cni app begin\n"),
        "{hosts_a}"
    );

    // The published port answers the test host.
    let answer = sh("ip netns exec th timeout 5 busybox wget -qO- http://192.0.2.1:8080/");
    assert_eq!(answer, "hello from web-a\n");

    // The other order: a leaves (b's file forgets it), then comes back after b.
    stop_and_delete(&berth, &id_a);
    let hosts_b = exec(&berth, &id_b, &["cat", "/etc/hosts"]).1;
    assert!(!hosts_b.contains("web-a"), "web-a is still in web-b's /etc/hosts:\n{hosts_b}");
    assert!(hosts_b.contains("\tweb-b\n") && hosts_b.contains("added-by-the-bundle-web-b"), "{hosts_b}");
    let id_a = container_id("web-a");
    berth.ok(&["run", "-d", "-b", &path(&web_a), &id_a]);
    reach_each_other(&berth, (&id_a, "web-a"), (&id_b, "web-b"));

    // After both are deleted nothing is left: no member, address, veth or rule.
    stop_and_delete(&berth, &id_b);
    let hosts_a = exec(&berth, &id_a, &["cat", "/etc/hosts"]).1;
    assert!(!hosts_a.contains("web-b"), "web-b is still in web-a's /etc/hosts:\n{hosts_a}");
    stop_and_delete(&berth, &id_a);
    let app: Value = dirs.json(&["network", "inspect", "app"]);
    assert_eq!(app["containers"], json!([]));
    let addresses = sh(&format!("ls {}/ipam/app | grep -c '^10\\.' || true", dirs.state.display()));
    assert_eq!(addresses.trim(), "0");
    assert_eq!(sh("ip -o link show master berth1 | grep -c veth || true").trim(), "0");
    // Rules of either backend the plugins may use.
    let rules = sh("{ iptables-save; nft list ruleset; } | grep -c -e web-a -e web-b -e 10.90.0. || true");
    assert_eq!(rules.trim(), "0", "{}", sh("nft list ruleset"));
    assert_eq!(
        std::fs::read_to_string(web_b.path().join("hosts")).unwrap(),
        "127.0.0.1\tlocalhost\n10.1.1.1\tadded-by-the-bundle-web-b\n"
    );
    dirs.ok(&["network", "rm", "app"]);
}
