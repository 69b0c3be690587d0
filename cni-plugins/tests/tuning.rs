//! The tuning plugin, each test inside a private network namespace it creates (the test
//! re-runs itself under `unshare -n -m` with a tmpfs on /run; "containers" are namespaces
//! made inside it, each with a veth `eth0`): the same link state, sysctls, results and
//! saved settings as Debian's reference tuning 1.1.1 for the same configs, DEL putting back
//! what either plugin changed, CHECK, `txQLen`, DEL without netns, and refusals.

use berth_cni::exec::run_plugin;
use berth_cni::skel::Args;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

#[path = "support/private_netns.rs"]
mod private_netns;
use private_netns::{inside_private_netns_with_reference, sh, REFERENCE_DIR};

fn berth() -> PathBuf {
    // The multicall binary runs as the plugin its file name says.
    std::fs::create_dir_all("/run/berth-bin").unwrap();
    let link = Path::new("/run/berth-bin/tuning");
    let _ = std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_berth-cni"), link);
    link.to_path_buf()
}

fn reference() -> PathBuf {
    Path::new(REFERENCE_DIR).join("tuning")
}

/// A "container": a namespace whose `eth0` is one end of a veth (MAC, MTU, queue length
/// and flags the same in every container), the other end left on the host.
fn container(name: &str) -> String {
    sh(&format!(
        "ip netns add {name}
         ip link add h-{name} type veth peer name eth0 netns {name}
         ip -n {name} link set eth0 address 02:42:0a:00:00:02 mtu 1500 txqueuelen 1000 up"
    ));
    format!("/run/netns/{name}")
}

fn call(plugin: &Path, command: &str, id: &str, netns: &str, conf: &Value, cni_args: &[(&str, &str)]) -> (i32, Value) {
    let args = Args {
        command: command.into(),
        container_id: id.into(),
        netns: netns.into(),
        ifname: "eth0".into(),
        args: cni_args.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        path: vec![REFERENCE_DIR.into()],
    };
    run_plugin(plugin, &args, conf).unwrap()
}

fn tuning_conf(data_dir: &str, netns: &str, extra: &Value) -> Value {
    let mut conf = json!({
        "cniVersion": "1.0.0", "name": "tunenet", "type": "tuning", "dataDir": data_dir,
        "prevResult": {
            "cniVersion": "1.0.0",
            "interfaces": [{ "name": "br0", "mac": "02:00:00:00:00:01" }, { "name": "eth0", "mac": "02:42:0a:00:00:02", "sandbox": netns }],
            "ips": [{ "address": "10.88.0.2/24", "interface": 1 }], "dns": {}
        }
    });
    for (k, v) in extra.as_object().unwrap() {
        conf[k] = v.clone();
    }
    conf
}

/// What the container's `eth0` is: MAC, MTU, queue length, flags (ifindex aside), and
/// the sysctls the configs here set.
fn link_state(name: &str) -> String {
    let link = sh(&format!("ip -n {name} -o link show eth0"));
    // Without the ifindex, and the peer's ("eth0@if7"), which differ between containers.
    let link = link.split_once(": ").map(|(_, rest)| rest).unwrap_or(&link);
    let link = match (link.find('@'), link.find(':')) {
        (Some(at), Some(colon)) if at < colon => format!("{}{}", &link[..at], &link[colon..]),
        _ => link.to_string(),
    };
    let sysctls = sh(&format!(
        "ip netns exec {name} sh -c 'cat /proc/sys/net/ipv4/conf/eth0/arp_notify /proc/sys/net/ipv6/conf/eth0/disable_ipv6 /proc/sys/net/ipv4/ping_group_range'"
    ));
    format!("{}\n{}", link.trim(), sysctls.trim())
}

fn saved_settings(path: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))).unwrap()
}

#[test]
fn same_link_state_results_and_saved_settings_as_the_reference() {
    if !inside_private_netns_with_reference("same_link_state_results_and_saved_settings_as_the_reference", "tuning") {
        return;
    }
    let configs = [
        json!({ "mac": "c2:11:22:33:44:55", "mtu": 1400, "promisc": true, "allmulti": true }),
        json!({ "sysctl": { "net.ipv4.conf.IFNAME.arp_notify": "1", "net.ipv6.conf.IFNAME.disable_ipv6": "1", "net.ipv4.ping_group_range": "0 0" } }),
        json!({ "allmulti": false, "promisc": false, "mtu": 9000 }),
        json!({ "runtimeConfig": { "mac": "c2:11:22:33:44:66" }, "args": { "cni": { "mtu": 1280, "promisc": true } } }),
    ];
    for (n, extra) in configs.iter().enumerate() {
        let (ours, theirs) = (format!("o{n}"), format!("t{n}"));
        let (our_ns, their_ns) = (container(&ours), container(&theirs));
        let initial = link_state(&ours);
        assert_eq!(initial, link_state(&theirs));
        let our_conf = tuning_conf("/run/tuning-ours", &our_ns, extra);
        let their_conf = tuning_conf("/run/tuning-theirs", &their_ns, extra);
        let (code, our_result) = call(&berth(), "ADD", &format!("c{n}"), &our_ns, &our_conf, &[]);
        assert_eq!(code, 0, "{extra}: {our_result}");
        let (code, their_result) = call(&reference(), "ADD", &format!("c{n}"), &their_ns, &their_conf, &[]);
        assert_eq!(code, 0, "{extra}: reference: {their_result}");
        let added = link_state(&ours);
        assert_eq!(added, link_state(&theirs), "{extra}: berth's link (left) differs from the reference's after ADD");
        assert_ne!(added, initial, "{extra} changed nothing");
        let mut their_result = their_result;
        their_result["interfaces"][1]["sandbox"] = our_ns.clone().into();
        assert_eq!(our_result, their_result, "{extra}: results differ");
        // The reference's CHECK compares sysctls without replacing IFNAME, and "0 0" with
        // the kernel's "0\t0": it fails on its own ADD there, so only berth's is asked.
        let checkers = if extra.get("sysctl").is_some() { 1 } else { 2 };
        for (plugin, conf, ns) in
            [(berth(), &our_conf, &our_ns), (reference(), &their_conf, &their_ns)].into_iter().take(checkers)
        {
            let mut conf = conf.clone();
            conf["prevResult"] = our_result.clone();
            conf["prevResult"]["interfaces"][1]["sandbox"] = ns.clone().into();
            let (code, out) = call(&plugin, "CHECK", &format!("c{n}"), ns, &conf, &[]);
            assert_eq!(code, 0, "{extra}: CHECK by {}: {out}", plugin.display());
        }
        let file = format!("c{n}_eth0.json");
        let saved = Path::new("/run/tuning-theirs").join(&file).exists();
        if saved {
            assert_eq!(
                saved_settings(&format!("/run/tuning-ours/{file}")),
                saved_settings(&format!("/run/tuning-theirs/{file}")),
                "{extra}: saved settings differ"
            );
        }
        for (plugin, conf, ns) in [(berth(), &our_conf, &our_ns), (reference(), &their_conf, &their_ns)] {
            let (code, out) = call(&plugin, "DEL", &format!("c{n}"), ns, conf, &[]);
            assert_eq!(code, 0, "{extra}: DEL by {}: {out}", plugin.display());
        }
        let deleted = link_state(&ours);
        assert_eq!(deleted, link_state(&theirs), "{extra}: berth's link (left) differs from the reference's after DEL");
        assert!(!Path::new("/run/tuning-ours").join(&file).exists(), "{extra}: saved settings left after DEL");
        if saved {
            // Link settings come back; sysctls stay, as in the reference (the namespace goes).
            assert_eq!(deleted, initial, "{extra}: DEL did not restore the link");
        }
        sh(&format!("ip netns del {ours}; ip netns del {theirs}"));
    }
}

#[test]
fn each_plugin_restores_what_the_other_changed() {
    if !inside_private_netns_with_reference("each_plugin_restores_what_the_other_changed", "tuning") {
        return;
    }
    let extra = json!({ "mac": "c2:11:22:33:44:55", "mtu": 1400, "promisc": true, "allmulti": true });
    for (name, adder, deleter) in [("x1", reference(), berth()), ("x2", berth(), reference())] {
        let ns = container(name);
        let initial = link_state(name);
        let conf = tuning_conf("/run/tuning", &ns, &extra);
        assert_eq!(call(&adder, "ADD", name, &ns, &conf, &[]).0, 0);
        assert_ne!(link_state(name), initial);
        assert_eq!(call(&deleter, "DEL", name, &ns, &conf, &[]).0, 0);
        assert_eq!(link_state(name), initial, "{} did not restore what {} changed", deleter.display(), adder.display());
        assert!(!Path::new(&format!("/run/tuning/{name}_eth0.json")).exists(), "saved settings left");
        sh(&format!("ip netns del {name}"));
    }
}

#[test]
fn txqlen_check_del_without_netns_and_refusals() {
    if !inside_private_netns_with_reference("txqlen_check_del_without_netns_and_refusals", "tuning") {
        return;
    }
    let ns = container("q");
    let conf = tuning_conf("/run/tuning", &ns, &json!({ "txQLen": 2000, "mtu": 1300 }));
    // The MAC from CNI_ARGS, as runtimes pass it.
    let (code, result) = call(&berth(), "ADD", "q", &ns, &conf, &[("MAC", "c2:00:00:00:00:07")]);
    assert_eq!(code, 0, "{result}");
    assert_eq!(result["interfaces"][1]["mac"], "c2:00:00:00:00:07");
    let link = sh("ip -n q -o link show eth0");
    assert!(link.contains(" qlen 2000") && link.contains(" mtu 1300 ") && link.contains("c2:00:00:00:00:07"), "{link}");
    let mut checked = conf.clone();
    checked["prevResult"] = result.clone();
    assert_eq!(call(&berth(), "CHECK", "q", &ns, &checked, &[("MAC", "c2:00:00:00:00:07")]).0, 0);
    // CHECK notices a setting changed behind its back.
    sh("ip -n q link set eth0 txqueuelen 500");
    let (code, out) = call(&berth(), "CHECK", "q", &ns, &checked, &[("MAC", "c2:00:00:00:00:07")]);
    assert_ne!(code, 0);
    assert!(out["msg"].as_str().unwrap().contains("transmit queue length is 500, configured 2000"), "{out}");
    assert_eq!(call(&berth(), "DEL", "q", &ns, &conf, &[]).0, 0);
    let link = sh("ip -n q -o link show eth0");
    assert!(link.contains(" qlen 1000") && link.contains(" mtu 1500 ") && link.contains("02:42:0a:00:00:02"), "{link}");
    // DEL without the namespace drops the saved settings and succeeds, repeated too.
    assert_eq!(call(&berth(), "ADD", "q", &ns, &conf, &[]).0, 0);
    assert!(Path::new("/run/tuning/q_eth0.json").exists());
    for _ in 0..2 {
        let (code, out) = call(&berth(), "DEL", "q", "", &conf, &[]);
        assert_eq!(code, 0, "{out}");
    }
    assert!(!Path::new("/run/tuning/q_eth0.json").exists(), "saved settings left by DEL without netns");
    // Keys outside the network namespace, MACs, and types are refused with code 7.
    let before = link_state("q");
    for (extra, words) in [
        (json!({ "sysctl": { "kernel.domainname": "x" } }), "only keys of the container's network namespace"),
        (json!({ "sysctl": { "net/../kernel/domainname": "x" } }), "invalid sysctl key"),
        (json!({ "mac": "c2:00" }), "invalid MAC address"),
        (json!({ "mtu": "1400" }), "\"mtu\": invalid type: string"),
        (json!({ "sysctl": { "net.ipv4.conf.IFNAME.arp_notify": 1 } }), "\"sysctl.net.ipv4.conf.IFNAME.arp_notify\""),
    ] {
        let (code, out) = call(&berth(), "ADD", "q", &ns, &tuning_conf("/run/tuning", &ns, &extra), &[]);
        assert_eq!((code, &out["code"]), (1, &json!(7)), "{extra}: {out}");
        assert!(out["msg"].as_str().unwrap().contains(words), "{extra}: {out}");
    }
    assert_eq!(link_state("q"), before, "a refused ADD changed the link");
    sh("ip netns del q");
}
