//! bridge, each test inside a private network namespace it creates (the test re-runs
//! itself under `unshare -n -m` with a tmpfs on /run; "containers" are namespaces made
//! inside it): reachability, each config key, the firewall after ADD, DEL, repeated DEL,
//! DEL without netns and GC, no leak from a failed ADD, 50 parallel ADDs, and differential
//! runs and mixed chains with Debian's reference plugins.

use berth_cni::exec::run_plugin;
use berth_cni::skel::Args;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const REFERENCE_DIR: &str = "/usr/lib/cni";

/// True inside the private namespace (run the body); outside, re-runs `test` there.
fn inside_private_netns(test: &str) -> bool {
    if std::env::var_os("BERTH_CNI_PRIVATE_NETNS").is_some() {
        // /sys shows the namespace that mounted it: mount one for the private namespace.
        sh("mount -t tmpfs tmpfs /run && mkdir /run/netns && mount -t sysfs sysfs /sys && ip link set lo up");
        return true;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{test} needs root (CI runs as root)");
        eprintln!("skipping {test}: needs root");
        return false;
    }
    let out = Command::new("unshare")
        .args(["-n", "-m", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("BERTH_CNI_PRIVATE_NETNS", "1")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("1 passed"), "{test} failed inside its private namespace:\n{text}");
    false
}

fn sh(script: &str) -> String {
    let out = Command::new("sh").arg("-ec").arg(script).output().unwrap();
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn succeeds(script: &str) -> bool {
    Command::new("sh").arg("-c").arg(script).stdout(Stdio::null()).stderr(Stdio::null()).status().unwrap().success()
}

/// A CNI bin directory holding berth's plugins (and, with `reference`, the reference ones
/// for the kinds not in `berth_kinds`).
fn bin_dir(name: &str, berth_kinds: &[&str]) -> PathBuf {
    let dir = PathBuf::from("/run").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for kind in ["bridge", "host-local", "loopback", "portmap"] {
        let target = if berth_kinds.contains(&kind) { PathBuf::from(env!("CARGO_BIN_EXE_berth-cni")) } else { Path::new(REFERENCE_DIR).join(kind) };
        let _ = std::os::unix::fs::symlink(target, dir.join(kind));
    }
    dir
}

fn berth_bin() -> PathBuf {
    bin_dir("berth-bin", &["bridge", "host-local", "loopback"])
}

fn add_netns(name: &str) -> String {
    sh(&format!("ip netns add {name}"));
    format!("/run/netns/{name}")
}

/// Runs the `bridge` of `bin` for one container, as a runtime does.
fn call(bin: &Path, command: &str, id: &str, netns: &str, conf: &Value) -> (i32, Value) {
    let args = Args { command: command.into(), container_id: id.into(), netns: netns.into(), ifname: "eth0".into(), args: Vec::new(), path: vec![bin.display().to_string()] };
    run_plugin(&bin.join("bridge"), &args, conf).unwrap()
}

fn network(version: &str, name: &str, bridge: &str, extra: Value) -> Value {
    let mut conf = json!({
        "cniVersion": version, "name": name, "type": "bridge", "bridge": bridge,
        "ipam": { "type": "host-local", "dataDir": format!("/run/ipam-{name}"), "ranges": [[{ "subnet": "10.88.0.0/24" }]], "routes": [{ "dst": "0.0.0.0/0" }] }
    });
    for (k, v) in extra.as_object().unwrap() {
        conf[k] = v.clone();
    }
    conf
}

fn nat_rules() -> Vec<String> {
    sh("iptables-save -t nat").lines().filter(|l| l.contains("CNI-")).map(String::from).collect()
}

fn ping(from_netns: Option<&str>, to: &str) -> bool {
    let prefix = from_netns.map(|n| format!("ip netns exec {n} ")).unwrap_or_default();
    succeeds(&format!("{prefix}busybox ping -c1 -W2 {to}"))
}

#[test]
fn containers_reach_each_other_and_the_host_reaches_them() {
    if !inside_private_netns("containers_reach_each_other_and_the_host_reaches_them") {
        return;
    }
    let bin = berth_bin();
    let conf = network("1.0.0", "reach", "br-reach", json!({ "isGateway": true, "ipMasq": true }));
    let (ns1, ns2) = (add_netns("c1"), add_netns("c2"));
    let (code, first) = call(&bin, "ADD", "c1", &ns1, &conf);
    assert_eq!(code, 0, "{first}");
    let (_, second) = call(&bin, "ADD", "c2", &ns2, &conf);
    assert_eq!(first["ips"][0]["address"], "10.88.0.2/24");
    assert_eq!(first["ips"][0]["interface"], 2);
    let names: Vec<&str> = first["interfaces"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!((names[0], names[2]), ("br-reach", "eth0"));
    assert_eq!(first["interfaces"][2]["sandbox"], ns1.as_str());
    assert!(ping(Some("c1"), "10.88.0.3"), "c1 cannot reach c2");
    assert!(ping(None, "10.88.0.2"), "the host cannot reach c1");
    assert!(sh("ip netns exec c1 ip route").contains("default via 10.88.0.1"));
    assert_eq!(second["ips"][0]["address"], "10.88.0.3/24");
    // The masquerade chains are named as the reference names them.
    let rules = nat_rules();
    assert_eq!(rules.iter().filter(|r| r.starts_with("-A POSTROUTING")).count(), 2, "{rules:?}");
    assert!(rules.iter().any(|r| r.contains("--comment \"name: \\\"reach\\\" id: \\\"c1\\\"\"")), "{rules:?}");
    // CHECK passes with the result as prevResult.
    let mut check = conf.clone();
    check["prevResult"] = first.clone();
    assert_eq!(call(&bin, "CHECK", "c1", &ns1, &check).0, 0);
    // DEL (with prevResult: the rules removed directly), repeated DEL, and DEL after the
    // namespace is gone (no prevResult: the rules found by reading the table) all succeed.
    assert_eq!(call(&bin, "DEL", "c1", &ns1, &check).0, 0);
    assert_eq!(call(&bin, "DEL", "c1", &ns1, &conf).0, 0);
    assert_eq!(nat_rules().iter().filter(|r| r.starts_with("-A POSTROUTING")).count(), 1);
    sh("ip netns del c2");
    assert_eq!(call(&bin, "DEL", "c2", &ns2, &conf).0, 0);
    assert!(nat_rules().is_empty(), "{:?}", nat_rules());
    assert!(!sh("ip -o link").contains("veth"), "a veth was left: {}", sh("ip -o link"));
    assert_eq!(sh("ls /run/ipam-reach/reach").split_whitespace().filter(|f| f.starts_with("10.")).count(), 0);
}

#[test]
fn each_key_behaves() {
    if !inside_private_netns("each_key_behaves") {
        return;
    }
    let bin = berth_bin();
    let conf = network("1.0.0", "keys", "br-keys", json!({ "isDefaultGateway": true, "mtu": 1400, "hairpinMode": true, "promiscMode": true, "portIsolation": true }));
    let ns = add_netns("k1");
    let (code, result) = call(&bin, "ADD", "k1", &ns, &conf);
    assert_eq!(code, 0, "{result}");
    let veth = result["interfaces"][1]["name"].as_str().unwrap().to_string();
    assert!(sh("ip netns exec k1 ip -o link show eth0").contains("mtu 1400"));
    assert_eq!(sh(&format!("cat /sys/class/net/{veth}/brport/hairpin_mode")).trim(), "1");
    assert_eq!(sh(&format!("cat /sys/class/net/{veth}/brport/isolated")).trim(), "1");
    assert!(sh("ip -o link show br-keys").contains("PROMISC"));
    assert!(sh("ip netns exec k1 ip route").contains("default via 10.88.0.1"));
    assert!(sh("ip -o addr show br-keys").contains("10.88.0.1/24"), "isDefaultGateway implies isGateway");
    assert_eq!(sh("cat /proc/sys/net/ipv4/ip_forward").trim(), "1");

    // disableContainerInterface: the interface exists but stays down and unaddressed.
    let down = network("1.0.0", "down", "br-down", json!({ "disableContainerInterface": true }));
    let ns = add_netns("d1");
    assert_eq!(call(&bin, "ADD", "d1", &ns, &down).0, 0);
    let link = sh("ip netns exec d1 ip -o addr show eth0");
    assert!(!link.contains("10.88.0."), "{link}");
    assert!(sh("ip netns exec d1 ip -o link show eth0").contains("state DOWN"));

    // forceAddress: a bridge holding another address of the subnet is refused without it
    // (and the failed ADD leaves nothing), and fixed with it.
    sh("ip link add br-force type bridge && ip addr add 10.88.0.254/24 dev br-force");
    let strict = network("1.0.0", "force", "br-force", json!({ "isGateway": true, "ipMasq": true }));
    let ns = add_netns("f1");
    let veths = || sh("ip -o link").lines().filter(|l| l.contains("veth")).count();
    let veths_before = veths();
    let (code, error) = call(&bin, "ADD", "f1", &ns, &strict);
    assert_eq!(code, 1);
    assert!(error["msg"].as_str().unwrap().contains("forceAddress"), "{error}");
    assert!(!sh("ip netns exec f1 ip -o link").contains("eth0"), "the failed ADD left the container's veth");
    assert_eq!(veths(), veths_before, "the failed ADD left the host's veth");
    assert!(nat_rules().is_empty(), "the failed ADD left rules: {:?}", nat_rules());
    assert_eq!(sh("ls /run/ipam-force/force").split_whitespace().filter(|f| f.starts_with("10.")).count(), 0, "the failed ADD kept its address");
    let forced = network("1.0.0", "force", "br-force", json!({ "isGateway": true, "forceAddress": true }));
    assert_eq!(call(&bin, "ADD", "f1", &ns, &forced).0, 0);
    let addresses = sh("ip -o addr show br-force");
    assert!(addresses.contains("10.88.0.1/24") && !addresses.contains("10.88.0.254"), "{addresses}");

    // Keys berth does not implement yet are refused clearly, touching nothing.
    for (key, value) in [("vlan", json!(100)), ("macspoofchk", json!(true))] {
        let conf = network("1.0.0", "unsup", "br-unsup", json!({ key: value }));
        let (code, error) = call(&bin, "ADD", "u1", &add_netns(&format!("u-{key}")), &conf);
        assert_eq!((code, error["code"].clone()), (1, json!(2)), "{error}");
        assert!(!sh("ip -o link").contains("br-unsup"));
    }

    // IPv6 beside IPv4, with DAD off unless enabledad.
    let dual = json!({
        "cniVersion": "1.0.0", "name": "dual", "type": "bridge", "bridge": "br-dual", "isGateway": true,
        "ipam": { "type": "host-local", "dataDir": "/run/ipam-dual", "ranges": [[{ "subnet": "10.89.0.0/24" }], [{ "subnet": "fd00:89::/64" }]] }
    });
    let ns = add_netns("v6");
    let (code, result) = call(&bin, "ADD", "v6", &ns, &dual);
    assert_eq!(code, 0, "{result}");
    assert_eq!(result["ips"][1]["address"], "fd00:89::2/64");
    assert_eq!(sh("ip netns exec v6 cat /proc/sys/net/ipv6/conf/eth0/accept_dad").trim(), "0");
    assert!(succeeds("busybox ping -c1 -W2 fd00:89::2") || succeeds("ping -6 -c1 -W2 fd00:89::2"), "the host cannot reach the container over IPv6");
}

#[test]
fn gc_removes_the_rules_of_stale_attachments() {
    if !inside_private_netns("gc_removes_the_rules_of_stale_attachments") {
        return;
    }
    let bin = berth_bin();
    let conf = network("1.1.0", "gcnet", "br-gc", json!({ "isGateway": true, "ipMasq": true }));
    for id in ["live", "stale1", "stale2"] {
        assert_eq!(call(&bin, "ADD", id, &add_netns(id), &conf).0, 0);
    }
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{ "containerID": "live", "ifname": "eth0" }]);
    assert_eq!(call(&bin, "GC", "", "", &gc).0, 0);
    let rules = nat_rules();
    assert!(rules.iter().all(|r| !r.contains("stale")), "{rules:?}");
    assert_eq!(rules.iter().filter(|r| r.starts_with("-A POSTROUTING")).count(), 1, "{rules:?}");
    let held = sh("ls /run/ipam-gcnet/gcnet");
    assert_eq!(held.split_whitespace().filter(|f| f.starts_with("10.")).collect::<Vec<_>>(), ["10.88.0.2"], "{held}");
    assert_eq!(call(&bin, "STATUS", "", "", &gc).0, 0);
}

#[test]
fn fifty_parallel_adds_on_one_network() {
    if !inside_private_netns("fifty_parallel_adds_on_one_network") {
        return;
    }
    let bin = berth_bin();
    let conf = network("1.0.0", "many", "br-many", json!({ "isGateway": true, "ipMasq": true }));
    let namespaces: Vec<String> = (0..50).map(|n| add_netns(&format!("p{n}"))).collect();
    let results: Vec<Value> = std::thread::scope(|scope| {
        let jobs: Vec<_> = namespaces.iter().enumerate().map(|(n, ns)| { let (bin, conf) = (&bin, &conf); scope.spawn(move || call(bin, "ADD", &format!("p{n}"), ns, conf)) }).collect();
        jobs.into_iter().map(|j| { let (code, r) = j.join().unwrap(); assert_eq!(code, 0, "{r}"); r }).collect()
    });
    let mut addresses: Vec<String> = results.iter().map(|r| r["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string()).collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 50);
    for address in &addresses {
        assert!(ping(None, address), "{address} is not reachable");
    }
    std::thread::scope(|scope| {
        for (n, ns) in namespaces.iter().enumerate() {
            let (bin, conf) = (&bin, &conf);
            scope.spawn(move || assert_eq!(call(bin, "DEL", &format!("p{n}"), ns, conf).0, 0));
        }
    });
    assert!(nat_rules().is_empty());
    assert_eq!(sh("ls /run/ipam-many/many").split_whitespace().filter(|f| f.starts_with("10.")).count(), 0);
    assert!(!sh("ip -o link").contains("veth"));
}

/// What a differential compares: addresses, routes, the shape of the result (keys, the
/// interfaces' names except the random host end), and the masquerade rules.
fn shape(result: &Value) -> Value {
    let mut r = result.clone();
    for (i, interface) in r["interfaces"].as_array_mut().into_iter().flatten().enumerate() {
        interface["mac"] = "mac".into();
        if i == 1 {
            interface["name"] = "host-veth".into();
        }
        if interface.get("sandbox").is_some() {
            interface["sandbox"] = "netns".into();
        }
    }
    r
}

fn reference_ready(test: &str) -> bool {
    let found = Path::new(REFERENCE_DIR).join("bridge").exists();
    if !found {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{test} needs Debian's containernetworking-plugins");
    }
    found
}

#[test]
fn same_results_and_rules_as_the_reference_bridge() {
    if !inside_private_netns("same_results_and_rules_as_the_reference_bridge") || !reference_ready("same_results_and_rules_as_the_reference_bridge") {
        return;
    }
    let ours = berth_bin();
    let theirs = bin_dir("reference-bin", &[]);
    for version in ["0.4.0", "1.0.0"] {
        let extra = json!({ "isGateway": true, "isDefaultGateway": true, "ipMasq": true, "hairpinMode": true, "mtu": 1450 });
        // No default route from IPAM: isDefaultGateway adds it (the reference fails on both).
        let mut ours_conf = network(version, "diff", "br-ours", extra.clone());
        ours_conf["ipam"]["dataDir"] = "/run/ipam-ours".into();
        ours_conf["ipam"]["routes"] = json!([{ "dst": "10.99.0.0/16" }]);
        let mut theirs_conf = network(version, "diff", "br-theirs", extra.clone());
        theirs_conf["ipam"]["dataDir"] = "/run/ipam-theirs".into();
        theirs_conf["ipam"]["routes"] = json!([{ "dst": "10.99.0.0/16" }]);
        let ns_ours = add_netns(&format!("ours-{version}"));
        let ns_theirs = add_netns(&format!("theirs-{version}"));
        let id = format!("diff-{version}");
        let (code, ours_result) = call(&ours, "ADD", &id, &ns_ours, &ours_conf);
        assert_eq!(code, 0, "{ours_result}");
        let ours_rules = nat_rules();
        assert_eq!(call(&ours, "DEL", &id, &ns_ours, &ours_conf).0, 0);
        let (code, theirs_result) = call(&theirs, "ADD", &id, &ns_theirs, &theirs_conf);
        assert_eq!(code, 0, "{theirs_result}");
        let theirs_rules = nat_rules();
        assert_eq!(call(&theirs, "DEL", &id, &ns_theirs, &theirs_conf).0, 0);
        let mut ours_shape = shape(&ours_result);
        ours_shape["interfaces"][0]["name"] = "bridge".into();
        let mut theirs_shape = shape(&theirs_result);
        theirs_shape["interfaces"][0]["name"] = "bridge".into();
        assert_eq!(ours_shape, theirs_shape, "{version}: results differ\nours:   {ours_result}\ntheirs: {theirs_result}");
        let chains = |rules: &[String]| -> Vec<String> { let mut c: Vec<String> = rules.iter().filter(|r| r.starts_with(':')).map(|r| r.split_whitespace().next().unwrap().to_string()).collect(); c.sort(); c };
        assert_eq!(chains(&ours_rules), chains(&theirs_rules), "{version}: chain names differ\n{ours_rules:?}\n{theirs_rules:?}");
        assert!(!theirs_rules.is_empty());
    }
}

#[test]
fn chains_mixing_berth_and_the_reference_plugins() {
    if !inside_private_netns("chains_mixing_berth_and_the_reference_plugins") || !reference_ready("chains_mixing_berth_and_the_reference_plugins") {
        return;
    }
    // berth's bridge with the reference host-local; the reference bridge with berth's.
    let berth_bridge = bin_dir("mix-a", &["bridge"]);
    let reference_bridge = bin_dir("mix-b", &["host-local"]);
    for (bin, name) in [(&berth_bridge, "mixa"), (&reference_bridge, "mixb")] {
        let conf = network("1.0.0", name, &format!("br-{name}"), json!({ "isGateway": true, "ipMasq": true }));
        let (ns1, ns2) = (add_netns(&format!("{name}1")), add_netns(&format!("{name}2")));
        assert_eq!(call(bin, "ADD", "one", &ns1, &conf).0, 0);
        let (code, result) = call(bin, "ADD", "two", &ns2, &conf);
        assert_eq!(code, 0, "{result}");
        assert_eq!(result["ips"][0]["address"], "10.88.0.3/24");
        assert!(ping(Some(&format!("{name}1")), "10.88.0.3"));
        for (id, ns) in [("one", &ns1), ("two", &ns2)] {
            assert_eq!(call(bin, "DEL", id, ns, &conf).0, 0);
        }
        assert_eq!(sh(&format!("ls /run/ipam-{name}/{name}")).split_whitespace().filter(|f| f.starts_with("10.")).count(), 0);
    }
    // A chain conflist through the reference portmap after berth's bridge.
    let conf = json!({
        "cniVersion": "1.0.0", "name": "mixc", "type": "portmap", "capabilities": { "portMappings": true },
        "runtimeConfig": { "portMappings": [{ "hostPort": 8080, "containerPort": 80, "protocol": "tcp" }] },
        "prevResult": call(&berth_bridge, "ADD", "three", &add_netns("mixc1"), &network("1.0.0", "mixc", "br-mixc", json!({ "isGateway": true }))).1
    });
    let mut child = Command::new(berth_bridge.join("portmap")).env("CNI_COMMAND", "ADD").env("CNI_CONTAINERID", "three").env("CNI_NETNS", "/run/netns/mixc1").env("CNI_IFNAME", "eth0").env("CNI_PATH", &berth_bridge).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(conf.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let portmap: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(portmap["ips"][0]["address"], "10.88.0.2/24", "portmap passes berth's result on");
    assert!(sh("iptables-save -t nat").contains("--dport 8080"));
}
