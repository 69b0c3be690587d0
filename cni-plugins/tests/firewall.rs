//! The firewall plugin, each test inside a private network namespace it creates (the test
//! re-runs itself under `unshare -n -m` with a tmpfs on /run; "containers" and "hosts" are
//! namespaces made inside it): the same filter-table chains and rules as Debian's reference
//! firewall 1.1.1 for the same configs and calls, DEL (also without prevResult, repeated)
//! and GC leaving none of a container's rules, `same-bridge` really isolating two bridges
//! in chains that mix berth's and the reference's plugins, and the firewalld backend
//! refused while firewalld does not run.

use berth_cni::exec::run_plugin;
use berth_cni::skel::Args;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

#[path = "support/private_netns.rs"]
mod private_netns;
use private_netns::{inside_private_netns_with_reference, sh, succeeds, REFERENCE_DIR};

fn berth(kind: &str) -> PathBuf {
    // The multicall binary runs as the plugin its file name says: a link per kind.
    let dir = Path::new("/run/berth-bin");
    std::fs::create_dir_all(dir).unwrap();
    let link = dir.join(kind);
    let _ = std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_berth-cni"), &link);
    link
}

fn reference(kind: &str) -> PathBuf {
    Path::new(REFERENCE_DIR).join(kind)
}

fn add_netns(name: &str) -> String {
    sh(&format!("ip netns add {name}"));
    format!("/run/netns/{name}")
}

fn args(command: &str, id: &str, netns: &str) -> Args {
    Args {
        command: command.into(),
        container_id: id.into(),
        netns: netns.into(),
        ifname: "eth0".into(),
        args: Vec::new(),
        path: vec!["/run/berth-bin".into(), REFERENCE_DIR.into()],
    }
}

/// Runs `plugin` in the network namespace `host` (a "host" of its own, so that berth's
/// and the reference's rules are written into separate filter tables), as a runtime does.
fn call_in(host: &str, plugin: &Path, command: &str, id: &str, conf: &Value) -> (i32, Value) {
    // `ip netns exec` runs the plugin itself there, with the CNI environment kept.
    let dir = PathBuf::from(format!("/run/in-{host}"));
    std::fs::create_dir_all(&dir).unwrap();
    let wrapper = dir.join(
        format!("{}-{}", plugin.file_name().unwrap().to_str().unwrap(), plugin.parent().unwrap().display())
            .replace('/', "_"),
    );
    if !wrapper.exists() {
        // Written whole under another name and renamed: parallel calls never run a script
        // being written.
        let partial = dir.join(format!("partial-{:?}", std::thread::current().id()).replace(['(', ')'], ""));
        std::fs::write(&partial, format!("#!/bin/sh\nexec ip netns exec {host} {} \"$@\"\n", plugin.display()))
            .unwrap();
        sh(&format!("chmod +x {}", partial.display()));
        std::fs::rename(&partial, &wrapper).unwrap();
    }
    // ADD and CHECK need a netns path; the firewall plugin never enters it.
    let netns = if matches!(command, "ADD" | "CHECK") { "/run/netns/unused" } else { "" };
    run_plugin(&wrapper, &args(command, id, netns), conf).unwrap()
}

/// A 1.0.0 firewall config over a prevResult of a bridge attachment with `addresses`.
fn firewall_conf(name: &str, extra: Value, addresses: &[&str]) -> Value {
    let ips: Vec<Value> = addresses.iter().map(|a| json!({ "address": a, "interface": 2 })).collect();
    let mut conf = json!({
        "cniVersion": "1.0.0", "name": name, "type": "firewall",
        "prevResult": {
            "cniVersion": "1.0.0",
            "interfaces": [{ "name": "br-fw", "mac": "02:00:00:00:00:01" }, { "name": "veth0", "mac": "02:00:00:00:00:02" }, { "name": "eth0", "mac": "02:00:00:00:00:03", "sandbox": "/run/netns/x" }],
            "ips": ips, "dns": {}
        }
    });
    for (k, v) in extra.as_object().unwrap() {
        conf[k] = v.clone();
    }
    conf
}

/// The filter table of `host` (`iptables-save` or `ip6tables-save`), without its
/// timestamps and counters: what the rules are, in iptables' own words and order.
fn filter_table(host: &str, save: &str) -> String {
    sh(&format!("ip netns exec {host} {save} -t filter"))
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(" [").next().unwrap_or(l).to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn tables(host: &str) -> (String, String) {
    (filter_table(host, "iptables-save"), filter_table(host, "ip6tables-save"))
}

#[test]
fn same_chains_and_rules_as_the_reference_firewall() {
    if !inside_private_netns_with_reference("same_chains_and_rules_as_the_reference_firewall", "firewall") {
        return;
    }
    let configs = [
        json!({}),
        json!({ "backend": "" }),
        json!({ "backend": "iptables", "iptablesAdminChainName": "MY-ADMIN" }),
        json!({ "backend": "iptables", "ingressPolicy": "same-bridge" }),
        json!({ "ingressPolicy": "open" }),
    ];
    for (n, extra) in configs.iter().enumerate() {
        let (ours, theirs) = (format!("o{n}"), format!("t{n}"));
        add_netns(&ours);
        add_netns(&theirs);
        let first = firewall_conf("fwnet", extra.clone(), &["10.88.0.2/24", "fd00:88::2/64"]);
        let second = firewall_conf("fwnet", extra.clone(), &["10.88.0.3/24"]);
        for (host, plugin) in [(&ours, berth("firewall")), (&theirs, reference("firewall"))] {
            for (id, conf) in [("c1", &first), ("c2", &second)] {
                let (code, result) = call_in(host, &plugin, "ADD", id, conf);
                assert_eq!(code, 0, "{extra}: ADD by {}: {result}", plugin.display());
                // The prevResult goes on unchanged.
                assert_eq!(result["ips"], conf["prevResult"]["ips"], "{extra}");
                assert_eq!(result["interfaces"], conf["prevResult"]["interfaces"], "{extra}");
                let (code, out) = call_in(host, &plugin, "CHECK", id, conf);
                assert_eq!(code, 0, "{extra}: CHECK by {}: {out}", plugin.display());
            }
        }
        let added = tables(&ours);
        assert_eq!(added, tables(&theirs), "{extra}: berth's tables (left) differ from the reference's after ADD");
        assert!(added.0.contains("-A CNI-FORWARD -s 10.88.0.3/32 -j ACCEPT"), "{}", added.0);
        assert!(added.1.contains("-A CNI-FORWARD -d fd00:88::2/128 -m conntrack"), "{}", added.1);
        if extra["ingressPolicy"] == "same-bridge" {
            assert!(added.0.contains("-A CNI-ISOLATION-STAGE-2 -o br-fw"), "{}", added.0);
        }
        for (host, plugin) in [(&ours, berth("firewall")), (&theirs, reference("firewall"))] {
            // DEL twice: the second finds nothing and succeeds.
            for _ in 0..2 {
                let (code, out) = call_in(host, &plugin, "DEL", "c1", &first);
                assert_eq!(code, 0, "{extra}: DEL by {}: {out}", plugin.display());
            }
        }
        let deleted = tables(&ours);
        assert_eq!(deleted, tables(&theirs), "{extra}: berth's tables (left) differ from the reference's after DEL");
        assert!(!deleted.0.contains("10.88.0.2/32") && !deleted.1.contains("fd00:88::2"), "{}", deleted.0);
        assert!(deleted.0.contains("10.88.0.3/32"), "c2's rules went with c1's:\n{}", deleted.0);
        // A CHECK notices a rule removed by hand.
        sh(&format!("ip netns exec {ours} iptables -D CNI-FORWARD -s 10.88.0.3/32 -j ACCEPT"));
        let (code, out) = call_in(&ours, &berth("firewall"), "CHECK", "c2", &second);
        assert_ne!(code, 0, "CHECK passed with a rule missing");
        assert!(out["msg"].as_str().unwrap().contains("-A CNI-FORWARD -s 10.88.0.3/32 -j ACCEPT"), "{out}");
        sh(&format!("ip netns del {ours}; ip netns del {theirs}"));
    }
}

/// The rules of the filter table that name `address`.
fn rules_of(host: &str, address: &str) -> Vec<String> {
    let (v4, v6) = tables(host);
    v4.lines().chain(v6.lines()).filter(|l| l.contains(address)).map(String::from).collect()
}

#[test]
fn del_without_prev_result_and_gc_remove_the_containers_rules() {
    if !inside_private_netns_with_reference("del_without_prev_result_and_gc_remove_the_containers_rules", "firewall") {
        return;
    }
    add_netns("h");
    let plugin = berth("firewall");
    let conf_of = |address: &str| firewall_conf("gcnet", json!({}), &[address]);
    for (id, address) in [("a", "10.88.0.2/24"), ("b", "10.88.0.3/24"), ("c", "fd00:88::4/64")] {
        assert_eq!(call_in("h", &plugin, "ADD", id, &conf_of(address)).0, 0);
    }
    assert_eq!(rules_of("h", "10.88.0.2/32").len(), 2);
    // DEL without prevResult (and without netns) still finds a's rules.
    let mut bare = conf_of("10.88.0.2/24");
    bare.as_object_mut().unwrap().remove("prevResult");
    let (code, out) = call_in("h", &plugin, "DEL", "a", &bare);
    assert_eq!(code, 0, "{out}");
    assert_eq!(rules_of("h", "10.88.0.2/32"), Vec::<String>::new());
    assert_eq!(call_in("h", &plugin, "DEL", "a", &bare).0, 0, "a repeated DEL failed");
    assert_eq!(rules_of("h", "10.88.0.3/32").len(), 2, "b's rules went with a's");
    // GC keeps b (valid) and removes c's rules.
    let mut gc = json!({ "cniVersion": "1.1.0", "name": "gcnet", "type": "firewall",
                          "cni.dev/valid-attachments": [{ "containerID": "b", "ifname": "eth0" }] });
    let (code, out) = call_in("h", &plugin, "GC", "", &gc);
    assert_eq!(code, 0, "{out}");
    assert_eq!(rules_of("h", "fd00:88::4/128"), Vec::<String>::new(), "GC left c's rules");
    assert_eq!(rules_of("h", "10.88.0.3/32").len(), 2, "GC removed b's rules");
    gc["cni.dev/valid-attachments"] = json!([]);
    assert_eq!(call_in("h", &plugin, "GC", "", &gc).0, 0);
    assert_eq!(rules_of("h", "10.88.0.3/32"), Vec::<String>::new(), "GC left b's rules");
    let (code, out) = call_in("h", &plugin, "STATUS", "", &gc);
    assert_eq!(code, 0, "STATUS: {out}");
    sh("ip netns del h");
}

#[test]
fn firewalld_backend_is_refused_while_firewalld_is_not_running() {
    if !inside_private_netns_with_reference("firewalld_backend_is_refused_while_firewalld_is_not_running", "firewall") {
        return;
    }
    add_netns("h");
    let conf = firewall_conf("fwd", json!({ "backend": "firewalld", "firewalldZone": "trusted" }), &["10.88.0.2/24"]);
    for command in ["ADD", "CHECK", "STATUS"] {
        let mut conf = conf.clone();
        if command == "STATUS" {
            conf["cniVersion"] = "1.1.0".into(); // STATUS is 1.1's
        }
        let (code, out) = call_in("h", &berth("firewall"), command, "c1", &conf);
        assert_eq!((code, &out["code"]), (1, &json!(7)), "{command}: {out}");
        let msg = out["msg"].as_str().unwrap();
        assert!(msg.contains("firewalld is not running") && msg.contains("\"iptables\""), "{command}: {msg}");
    }
    assert_eq!(rules_of("h", "10.88.0.2"), Vec::<String>::new(), "a refused ADD wrote rules");
    // DEL has nothing of firewalld's to undo and succeeds; "" chooses iptables.
    assert_eq!(call_in("h", &berth("firewall"), "DEL", "c1", &conf).0, 0);
    let chosen = firewall_conf("fwd", json!({ "backend": "" }), &["10.88.0.2/24"]);
    assert_eq!(call_in("h", &berth("firewall"), "ADD", "c1", &chosen).0, 0);
    assert_eq!(rules_of("h", "10.88.0.2/32").len(), 2);
    assert_eq!(call_in("h", &berth("firewall"), "DEL", "c1", &chosen).0, 0);
    // Wrong types are refused naming the key, by berth as by the reference (code 7 vs 999
    // aside: the reference's generic decode error has no code of its own).
    let wrong = firewall_conf("fwd", json!({ "iptablesAdminChainName": 5 }), &["10.88.0.2/24"]);
    let (code, out) = call_in("h", &berth("firewall"), "ADD", "c1", &wrong);
    assert_eq!((code, &out["code"]), (1, &json!(7)), "{out}");
    assert!(out["msg"].as_str().unwrap().contains("\"iptablesAdminChainName\""), "{out}");
    assert_ne!(call_in("h", &reference("firewall"), "ADD", "c1", &wrong).0, 0);
    sh("ip netns del h");
}

/// Runs a chain of (plugin, config) for one container as a runtime does: ADD in order,
/// each given the previous result; DEL in reverse with the final result.
struct Chain {
    name: &'static str,
    plugins: Vec<(PathBuf, Value)>,
}

impl Chain {
    fn conf(&self, index: usize, prev: Option<&Value>) -> Value {
        let mut conf = self.plugins[index].1.clone();
        conf["cniVersion"] = "1.0.0".into();
        conf["name"] = self.name.into();
        if let Some(prev) = prev {
            conf["prevResult"] = prev.clone();
        }
        conf
    }

    fn add(&self, id: &str, netns: &str) -> Value {
        let mut prev: Option<Value> = None;
        for (i, (plugin, _)) in self.plugins.iter().enumerate() {
            let (code, result) = run_plugin(plugin, &args("ADD", id, netns), &self.conf(i, prev.as_ref())).unwrap();
            assert_eq!(code, 0, "ADD of {} on {}: {result}", plugin.display(), self.name);
            prev = Some(result);
        }
        prev.unwrap()
    }

    fn del(&self, id: &str, netns: &str, result: &Value) {
        for (i, (plugin, _)) in self.plugins.iter().enumerate().rev() {
            let (code, out) = run_plugin(plugin, &args("DEL", id, netns), &self.conf(i, Some(result))).unwrap();
            assert_eq!(code, 0, "DEL of {} on {}: {out}", plugin.display(), self.name);
        }
    }
}

fn bridge_conf(bridge: &str, subnet: &str) -> Value {
    json!({ "type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": true, "ipMasqBackend": "iptables",
            "ipam": { "type": "host-local", "dataDir": "/run/ipam", "ranges": [[{ "subnet": subnet }]], "routes": [{ "dst": "0.0.0.0/0" }] } })
}

fn ping(from: &str, to: &Value) -> bool {
    let address = to["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string();
    succeeds(&format!("ip netns exec {from} busybox ping -c1 -W1 {address}"))
}

#[test]
fn same_bridge_policy_isolates_bridges_in_mixed_chains() {
    if !inside_private_netns_with_reference("same_bridge_policy_isolates_bridges_in_mixed_chains", "firewall") {
        return;
    }
    let isolated = json!({ "type": "firewall", "ingressPolicy": "same-bridge" });
    let open = json!({ "type": "firewall" });
    let tuning = json!({ "type": "tuning", "dataDir": "/run/tuning", "mtu": 1400, "sysctl": { "net.ipv4.conf.IFNAME.arp_notify": "1" } });
    // Reference bridge with berth's firewall and tuning, and the reverse.
    let left = Chain {
        name: "left",
        plugins: vec![
            (reference("bridge"), bridge_conf("br-left", "10.10.1.0/24")),
            (berth("firewall"), isolated.clone()),
            (berth("tuning"), tuning.clone()),
        ],
    };
    let right = Chain {
        name: "right",
        plugins: vec![
            (berth("bridge"), bridge_conf("br-right", "10.10.2.0/24")),
            (reference("firewall"), isolated.clone()),
            (reference("tuning"), tuning.clone()),
        ],
    };
    // A third network, open, to show that the isolation, not routing, stops the others.
    let third = Chain {
        name: "third",
        plugins: vec![(berth("bridge"), bridge_conf("br-third", "10.10.3.0/24")), (berth("firewall"), open)],
    };
    let members = [("l1", &left), ("l2", &left), ("r1", &right), ("t1", &third)];
    let results: Vec<(String, Value)> =
        members.iter().map(|(id, chain)| (id.to_string(), chain.add(id, &add_netns(id)))).collect();
    let result = |id: &str| &results.iter().find(|(i, _)| i == id).unwrap().1;
    assert!(ping("l1", result("l2")), "l1 cannot reach l2 on its own bridge");
    assert!(!ping("l1", result("r1")), "l1 reached r1 across isolated bridges");
    assert!(!ping("r1", result("l1")), "r1 reached l1 across isolated bridges");
    // The host routes between bridges: an open network's container reaches an isolated
    // one (the policy isolates isolated bridges from each other, as Docker's networks),
    // and without the isolation rules l1 reaches r1.
    assert!(ping("t1", result("l1")), "t1 (open network) cannot reach l1");
    assert_eq!(sh("ip netns exec l1 cat /proc/sys/net/ipv4/conf/eth0/arp_notify").trim(), "1");
    assert!(sh("ip netns exec r1 ip -o link show eth0").contains(" mtu 1400 "));
    sh("iptables -F CNI-ISOLATION-STAGE-2");
    assert!(ping("l1", result("r1")), "l1 cannot reach r1 even without the isolation rules");
    for ((id, chain), (_, added)) in members.iter().zip(&results) {
        chain.del(id, &format!("/run/netns/{id}"), added);
    }
    // Nothing of the containers is left: no accept rule, no masquerading, no veth.
    let (v4, _) = tables_here();
    assert!(!v4.contains("10.10."), "rules left after DEL:\n{v4}");
    assert!(!sh("iptables-save -t nat").contains("10.10."), "masquerade rules left after DEL");
    assert_eq!(sh("ip -o link show type veth"), "", "veths left after DEL");
    assert_eq!(std::fs::read_dir("/run/tuning").map(|d| d.count()).unwrap_or(0), 0, "tuning's saved settings left");
}

/// The private namespace's own filter tables.
fn tables_here() -> (String, String) {
    (sh("iptables-save -t filter"), sh("ip6tables-save -t filter"))
}

#[test]
fn parallel_adds_write_each_shared_rule_once() {
    if !inside_private_netns_with_reference("parallel_adds_write_each_shared_rule_once", "firewall") {
        return;
    }
    add_netns("h");
    let plugin = berth("firewall");
    let extra = json!({ "ingressPolicy": "same-bridge" });
    // One call first writes the wrapper that the parallel ones run.
    let (code, versions) = call_in("h", &plugin, "VERSION", "", &json!({}));
    assert_eq!(code, 0, "{versions}");
    std::thread::scope(|scope| {
        for n in 0..24 {
            let (plugin, extra) = (&plugin, &extra);
            scope.spawn(move || {
                let conf = firewall_conf("par", extra.clone(), &[&format!("10.88.1.{}/24", n + 2)]);
                let (code, out) = call_in("h", plugin, "ADD", &format!("p{n}"), &conf);
                assert_eq!(code, 0, "ADD p{n}: {out}");
            });
        }
    });
    let (v4, _) = tables("h");
    let count = |text: &str| v4.lines().filter(|l| l.contains(text)).count();
    assert_eq!(count("-A FORWARD -m comment --comment \"CNI firewall plugin rules\" -j CNI-FORWARD"), 1, "{v4}");
    assert_eq!(count("-j CNI-ISOLATION-STAGE-1"), 1, "{v4}");
    assert_eq!(count("-j CNI-ADMIN"), 1, "{v4}");
    assert_eq!(count("-A CNI-ISOLATION-STAGE-2 -o br-fw"), 1, "{v4}");
    assert_eq!(count("-A CNI-FORWARD -s 10.88.1."), 24, "{v4}");
    assert_eq!(count("-A CNI-FORWARD -d 10.88.1."), 24, "{v4}");
    sh("ip netns del h");
}
