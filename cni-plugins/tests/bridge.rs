//! bridge, each test inside a private network namespace it creates (the test re-runs
//! itself under `unshare -n -m` with a tmpfs on /run; "containers" are namespaces made
//! inside it): reachability, each config key, the firewall (both backends) after ADD, DEL,
//! repeated DEL, DEL without netns and GC, no leak from a failed ADD, 50 parallel ADDs,
//! the masquerade rules compared in netlink terms with those `nft -f` writes, and
//! differential runs and mixed chains with Debian's reference plugins, keys of the wrong
//! type and unknown keys included.

use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[path = "support/plugin_bin.rs"]
mod plugin_bin;
#[path = "support/private_netns.rs"]
mod private_netns;
use plugin_bin::bin_dir;
use private_netns::{inside_private_netns, sh, succeeds, REFERENCE_DIR};

fn berth_bin() -> PathBuf {
    bin_dir("berth-bin", &["bridge", "host-local", "loopback"])
}

fn add_netns(name: &str) -> String {
    sh(&format!("ip netns add {name}"));
    format!("/run/netns/{name}")
}

/// Runs the `bridge` of `bin` for one container, as a runtime does.
fn call(bin: &Path, command: &str, id: &str, netns: &str, conf: &Value) -> (i32, Value) {
    plugin_bin::call(bin, "bridge", command, id, netns, conf)
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

/// The iptables backend's chains and rules, as iptables-save prints them.
fn nat_rules() -> Vec<String> {
    sh("iptables-save -t nat").lines().filter(|l| l.contains("CNI-")).map(String::from).collect()
}

/// The nftables backend's per-address rules, as `nft` prints them.
fn masq_rules() -> Vec<String> {
    let out =
        Command::new("nft").args(["list", "chain", "inet", "cni_plugins_masquerade", "masq_checks"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| l.ends_with('"') && l.contains(" masquerade comment "))
        .map(String::from)
        .collect()
}

/// One attachment's masquerade rules in each backend: (nftables, iptables). The nftables
/// backend comments its rule `net: N, if: eth0, id: C`; the iptables one jumps to, and
/// fills, the chain named after network and container.
fn attachment_rules(network: &str, id: &str) -> (Vec<String>, Vec<String>) {
    let out = Command::new("nft").args(["list", "table", "inet", "cni_plugins_masquerade"]).output().unwrap();
    let tag = format!("net: {network}, if: eth0, id: {id}\"");
    let nft = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| l.contains(&tag))
        .map(String::from)
        .collect();
    let chain = berth_cni::firewall::iptables::chain_name(network, id);
    let iptables = nat_rules().into_iter().filter(|l| l.contains(&chain)).collect();
    (nft, iptables)
}

/// The first 16 hex digits of sha512(text), by `sha512sum`.
fn hash16(text: &str) -> String {
    sh(&format!("printf %s '{text}' | sha512sum"))[..16].to_string()
}

/// The rule the nftables backend writes for one address, in `nft`'s words.
fn masq_rule(address: &str, subnet: &str, network: &str, id: &str) -> String {
    let family = if address.contains(':') { "ip6" } else { "ip" };
    format!("{family} saddr {address} {family} daddr != {subnet} masquerade comment \"{}-{}, net: {network}, if: eth0, id: {id}\"", hash16(network), hash16(&format!("eth0:{id}")))
}

/// `nft --debug=netlink list table inet cni_plugins_masquerade`: each rule as the kernel
/// holds it (expressions, registers, data, comment bytes), then the table in `nft`'s words.
/// Rule handles are masked: each rule's title line ends in its handle and the handle of
/// the rule before it, numbers the kernel hands out in the order objects are created in
/// the table, which is an order berth (postrouting's rules first, in one transaction) and
/// `nft -f` (the file's order) are free to differ in. Nothing else is masked.
fn masquerade_table_in_netlink_terms(listing: &str) -> String {
    let title = "inet cni_plugins_masquerade ";
    listing
        .lines()
        .map(|line| match line.strip_prefix(title) {
            Some(rest) => format!("{title}{} <handle>", rest.split_whitespace().next().unwrap_or_default()),
            None => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn masquerade_rules_are_the_ones_nft_writes() {
    if !inside_private_netns("masquerade_rules_are_the_ones_nft_writes") {
        return;
    }
    // One dual-stack ADD's rules, written by berth over netlink in this namespace.
    let bin = berth_bin();
    let mut conf = network("1.0.0", "golden", "br-golden", json!({ "isGateway": true, "ipMasq": true }));
    conf["ipam"]["ranges"] = json!([[{ "subnet": "10.88.0.0/24" }], [{ "subnet": "fd00:88::/64" }]]);
    let ns = add_netns("g1");
    let (code, result) = call(&bin, "ADD", "g1", &ns, &conf);
    assert_eq!(code, 0, "{result}");
    assert_eq!(
        (&result["ips"][0]["address"], &result["ips"][1]["address"]),
        (&json!("10.88.0.2/24"), &json!("fd00:88::2/64"))
    );
    let berth = masquerade_table_in_netlink_terms(&sh("nft --debug=netlink list table inet cni_plugins_masquerade"));
    // The same rules in the reference layout's text, written by `nft -f` in a namespace of
    // its own (made by unshare inside this one, gone when nft is).
    let ruleset = format!(
        "table inet cni_plugins_masquerade {{\n\tchain masq_checks {{\n\t\t{}\n\t\t{}\n\t}}\n\tchain postrouting {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\tip daddr 224.0.0.0/4 return\n\t\tip6 daddr ff00::/8 return\n\t\tgoto masq_checks\n\t}}\n}}\n",
        masq_rule("10.88.0.2", "10.88.0.0/24", "golden", "g1"),
        masq_rule("fd00:88::2", "fd00:88::/64", "golden", "g1")
    );
    std::fs::write("/run/golden.nft", &ruleset).unwrap();
    let nft = masquerade_table_in_netlink_terms(&sh(
        "unshare -n -- sh -ec 'nft -f /run/golden.nft && nft --debug=netlink list table inet cni_plugins_masquerade'",
    ));
    assert_eq!(nft.matches("[ masq ]").count(), 2, "nft -f wrote no masquerade rules:\n{nft}");
    assert_eq!(berth, nft, "berth's rules (left) differ from the ones nft writes for\n{ruleset}");
    assert_eq!(call(&bin, "DEL", "g1", &ns, &conf).0, 0);
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
    let names: Vec<&str> =
        first["interfaces"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!((names[0], names[2]), ("br-reach", "eth0"));
    assert_eq!(first["interfaces"][2]["sandbox"], ns1.as_str());
    assert!(ping(Some("c1"), "10.88.0.3"), "c1 cannot reach c2");
    assert!(ping(None, "10.88.0.2"), "the host cannot reach c1");
    assert!(sh("ip netns exec c1 ip route").contains("default via 10.88.0.1"));
    assert_eq!(second["ips"][0]["address"], "10.88.0.3/24");
    assert_eq!(
        first["interfaces"][0]["mac"], second["interfaces"][0]["mac"],
        "the bridge's MAC changed as a port came"
    );
    // The reported MACs are the links' own.
    let veth = first["interfaces"][1]["name"].as_str().unwrap();
    for (shown, interface) in [
        (sh(&format!("ip -o link show {veth}")), &first["interfaces"][1]),
        (sh("ip netns exec c1 ip -o link show eth0"), &first["interfaces"][2]),
        (sh("ip -o link show br-reach"), &first["interfaces"][0]),
    ] {
        assert!(
            shown.contains(&format!("link/ether {} ", interface["mac"].as_str().unwrap())),
            "{interface} vs {shown}"
        );
    }
    // The default nftables backend writes the reference's nftables layout: one rule per
    // address in `masq_checks`, reached from `postrouting` past multicast.
    assert_eq!(
        masq_rules(),
        [masq_rule("10.88.0.2", "10.88.0.0/24", "reach", "c1"), masq_rule("10.88.0.3", "10.88.0.0/24", "reach", "c2")]
    );
    let postrouting = sh("nft list chain inet cni_plugins_masquerade postrouting");
    for line in [
        "type nat hook postrouting priority srcnat; policy accept;",
        "ip daddr 224.0.0.0/4 return",
        "ip6 daddr ff00::/8 return",
        "goto masq_checks",
    ] {
        assert!(postrouting.contains(line), "{line} missing from\n{postrouting}");
    }
    assert!(nat_rules().is_empty(), "no iptables rules without ipMasqBackend iptables");
    // An ADD puts back `postrouting`'s rules when someone removed them.
    sh("nft flush chain inet cni_plugins_masquerade postrouting");
    let ns3 = add_netns("c3");
    assert_eq!(call(&bin, "ADD", "c3", &ns3, &conf).0, 0);
    assert!(sh("nft list chain inet cni_plugins_masquerade postrouting").contains("goto masq_checks"));
    assert_eq!(call(&bin, "DEL", "c3", &ns3, &conf).0, 0);
    // CHECK passes with the result as prevResult.
    let mut check = conf.clone();
    check["prevResult"] = first.clone();
    assert_eq!(call(&bin, "CHECK", "c1", &ns1, &check).0, 0);
    // DEL (with prevResult), repeated DEL, and DEL after the namespace is gone (no
    // prevResult) all succeed and take exactly their own rule.
    assert_eq!(call(&bin, "DEL", "c1", &ns1, &check).0, 0);
    assert_eq!(call(&bin, "DEL", "c1", &ns1, &conf).0, 0);
    assert_eq!(masq_rules(), [masq_rule("10.88.0.3", "10.88.0.0/24", "reach", "c2")]);
    sh("ip netns del c2");
    assert_eq!(call(&bin, "DEL", "c2", &ns2, &conf).0, 0);
    assert!(masq_rules().is_empty(), "{:?}", masq_rules());
    assert!(!sh("ip -o link").contains("veth"), "a veth was left: {}", sh("ip -o link"));
    assert_eq!(sh("ls /run/ipam-reach/reach").split_whitespace().filter(|f| f.starts_with("10.")).count(), 0);
}

#[test]
fn each_key_behaves() {
    if !inside_private_netns("each_key_behaves") {
        return;
    }
    let bin = berth_bin();
    let conf = network(
        "1.0.0",
        "keys",
        "br-keys",
        json!({ "isDefaultGateway": true, "mtu": 1400, "hairpinMode": true, "promiscMode": true, "portIsolation": true }),
    );
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
    // (and the failed ADD leaves nothing: no veth, no address, no masquerade rule in either
    // backend), and fixed with it. With each masquerade backend, the same count then sees
    // the successful ADD's rule and its removal by DEL, so its zero means something.
    sh("ip link add br-force type bridge");
    let ns = add_netns("f1");
    let veths = || sh("ip -o link").lines().filter(|l| l.contains("veth")).count();
    for backend in ["nftables", "iptables"] {
        sh("ip addr flush dev br-force && ip addr add 10.88.0.254/24 dev br-force");
        let strict = network(
            "1.0.0",
            "force",
            "br-force",
            json!({ "isGateway": true, "ipMasq": true, "ipMasqBackend": backend }),
        );
        let veths_before = veths();
        let (code, error) = call(&bin, "ADD", "f1", &ns, &strict);
        assert_eq!(code, 1);
        assert!(error["msg"].as_str().unwrap().contains("forceAddress"), "{error}");
        assert!(!sh("ip netns exec f1 ip -o link").contains("eth0"), "the failed ADD left the container's veth");
        assert_eq!(veths(), veths_before, "the failed ADD left the host's veth");
        assert_eq!(
            attachment_rules("force", "f1"),
            (vec![], vec![]),
            "the failed ADD ({backend}) left masquerade rules (nftables, iptables)"
        );
        assert!(nat_rules().is_empty(), "the failed ADD left rules: {:?}", nat_rules());
        assert_eq!(
            sh("ls /run/ipam-force/force").split_whitespace().filter(|f| f.starts_with("10.")).count(),
            0,
            "the failed ADD kept its address"
        );
        let mut forced = strict.clone();
        forced["forceAddress"] = json!(true);
        assert_eq!(call(&bin, "ADD", "f1", &ns, &forced).0, 0);
        let addresses = sh("ip -o addr show br-force");
        assert!(addresses.contains("10.88.0.1/24") && !addresses.contains("10.88.0.254"), "{addresses}");
        let (nft, iptables) = attachment_rules("force", "f1");
        let seen = match backend {
            "nftables" => nft.len() == 1 && iptables.is_empty(),
            _ => nft.is_empty() && iptables.iter().any(|r| r.ends_with("-j MASQUERADE")),
        };
        assert!(seen, "the {backend} ADD's masquerade rule, counted in nftables {nft:?} and iptables {iptables:?}");
        assert_eq!(call(&bin, "DEL", "f1", &ns, &forced).0, 0);
        assert_eq!(
            attachment_rules("force", "f1"),
            (vec![], vec![]),
            "DEL ({backend}) left masquerade rules (nftables, iptables)"
        );
    }

    // A container that has an interface of that name already: refused, and its interface,
    // which is not the plugin's, stays.
    let ns = add_netns("e1");
    sh("ip netns exec e1 ip link add eth0 type veth peer name theirs0");
    let busy = network("1.0.0", "busy", "br-busy", json!({ "isGateway": true }));
    let (code, error) = call(&bin, "ADD", "e1", &ns, &busy);
    assert_eq!((code, error["code"].clone()), (1, json!(7)), "{error}");
    assert!(sh("ip netns exec e1 ip -o link show eth0").contains("theirs0"), "the container's own eth0 was removed");
    assert_eq!(
        sh("ls /run/ipam-busy/busy").split_whitespace().filter(|f| f.starts_with("10.")).count(),
        0,
        "the failed ADD kept its address"
    );

    // Bad values are refused before anything is made.
    for (key, value, code) in [
        ("vlan", json!(5000), 7),
        ("vlanTrunk", json!([{ "minID": 20, "maxID": 10 }]), 7),
        ("ipMasqBackend", json!("pf"), 7),
    ] {
        let conf = network("1.0.0", "bad", "br-bad", json!({ key: value, "ipMasq": true }));
        let (exit, error) = call(&bin, "ADD", "b1", &add_netns(&format!("b-{key}")), &conf);
        assert_eq!((exit, error["code"].clone()), (1, json!(code)), "{key}: {error}");
        assert!(!sh("ip -o link").contains("br-bad"));
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
    assert!(
        succeeds("busybox ping -c1 -W2 fd00:89::2") || succeeds("ping -6 -c1 -W2 fd00:89::2"),
        "the host cannot reach the container over IPv6"
    );
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
    // Another network's rule is not this network's GC's business.
    let other = network(
        "1.1.0",
        "gcother",
        "br-gc2",
        json!({ "isGateway": true, "ipMasq": true, "ipam": { "type": "host-local", "dataDir": "/run/ipam-gcother", "ranges": [[{ "subnet": "10.87.0.0/24" }]] } }),
    );
    assert_eq!(call(&bin, "ADD", "elsewhere", &add_netns("elsewhere"), &other).0, 0);
    assert_eq!(call(&bin, "GC", "", "", &gc).0, 0);
    assert_eq!(
        masq_rules(),
        [
            masq_rule("10.88.0.2", "10.88.0.0/24", "gcnet", "live"),
            masq_rule("10.87.0.2", "10.87.0.0/24", "gcother", "elsewhere")
        ]
    );
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
        let jobs: Vec<_> = namespaces
            .iter()
            .enumerate()
            .map(|(n, ns)| {
                let (bin, conf) = (&bin, &conf);
                scope.spawn(move || call(bin, "ADD", &format!("p{n}"), ns, conf))
            })
            .collect();
        jobs.into_iter()
            .map(|j| {
                let (code, r) = j.join().unwrap();
                assert_eq!(code, 0, "{r}");
                r
            })
            .collect()
    });
    let mut addresses: Vec<String> = results
        .iter()
        .map(|r| r["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string())
        .collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 50);
    for address in &addresses {
        assert!(ping(None, address), "{address} is not reachable");
    }
    assert_eq!(masq_rules().len(), 50);
    std::thread::scope(|scope| {
        for (n, ns) in namespaces.iter().enumerate() {
            let (bin, conf) = (&bin, &conf);
            scope.spawn(move || assert_eq!(call(bin, "DEL", &format!("p{n}"), ns, conf).0, 0));
        }
    });
    assert!(masq_rules().is_empty(), "{:?}", masq_rules());
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
    if !inside_private_netns("same_results_and_rules_as_the_reference_bridge")
        || !reference_ready("same_results_and_rules_as_the_reference_bridge")
    {
        return;
    }
    let ours = berth_bin();
    let theirs = bin_dir("reference-bin", &[]);
    for version in ["0.4.0", "1.0.0"] {
        // The reference 1.1.1 knows only iptables (and ignores the key).
        let extra = json!({ "isGateway": true, "isDefaultGateway": true, "ipMasq": true, "hairpinMode": true, "mtu": 1450, "ipMasqBackend": "iptables" });
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
        assert_eq!(
            ours_shape, theirs_shape,
            "{version}: results differ\nours:   {ours_result}\ntheirs: {theirs_result}"
        );
        let chains = |rules: &[String]| -> Vec<String> {
            let mut c: Vec<String> = rules
                .iter()
                .filter(|r| r.starts_with(':'))
                .map(|r| r.split_whitespace().next().unwrap().to_string())
                .collect();
            c.sort();
            c
        };
        assert_eq!(
            chains(&ours_rules),
            chains(&theirs_rules),
            "{version}: chain names differ\n{ours_rules:?}\n{theirs_rules:?}"
        );
        assert!(!theirs_rules.is_empty());
    }
}

#[test]
fn chains_mixing_berth_and_the_reference_plugins() {
    if !inside_private_netns("chains_mixing_berth_and_the_reference_plugins")
        || !reference_ready("chains_mixing_berth_and_the_reference_plugins")
    {
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
        assert_eq!(
            sh(&format!("ls /run/ipam-{name}/{name}")).split_whitespace().filter(|f| f.starts_with("10.")).count(),
            0
        );
    }
    // A chain conflist through the reference portmap after berth's bridge.
    let conf = json!({
        "cniVersion": "1.0.0", "name": "mixc", "type": "portmap", "capabilities": { "portMappings": true },
        "runtimeConfig": { "portMappings": [{ "hostPort": 8080, "containerPort": 80, "protocol": "tcp" }] },
        "prevResult": call(&berth_bridge, "ADD", "three", &add_netns("mixc1"), &network("1.0.0", "mixc", "br-mixc", json!({ "isGateway": true }))).1
    });
    let mut child = Command::new(berth_bridge.join("portmap"))
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "three")
        .env("CNI_NETNS", "/run/netns/mixc1")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", &berth_bridge)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(conf.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let portmap: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(portmap["ips"][0]["address"], "10.88.0.2/24", "portmap passes berth's result on");
    assert!(sh("iptables-save -t nat").contains("--dport 8080"));
}

#[test]
fn iptables_backend_and_removal_across_backends() {
    if !inside_private_netns("iptables_backend_and_removal_across_backends") {
        return;
    }
    let bin = berth_bin();
    let iptables =
        network("1.1.0", "ipt", "br-ipt", json!({ "isGateway": true, "ipMasq": true, "ipMasqBackend": "iptables" }));
    let default = network("1.1.0", "ipt", "br-ipt", json!({ "isGateway": true, "ipMasq": true }));
    let (ns1, ns2, ns3) = (add_netns("i1"), add_netns("i2"), add_netns("i3"));
    for (id, ns) in [("i1", &ns1), ("i2", &ns2), ("i3", &ns3)] {
        let (code, result) = call(&bin, "ADD", id, ns, &iptables);
        assert_eq!(code, 0, "{result}");
    }
    // The reference's chain per container: CNI- and 24 hex of sha512(name + id), commented.
    let chain = format!("CNI-{}", &sh("printf %s ipti1 | sha512sum")[..24]);
    let rules = nat_rules();
    assert!(rules.iter().any(|r| r.starts_with(&format!(":{chain} "))), "{rules:?}");
    assert!(
        rules.iter().any(|r| r
            == &format!(
                "-A POSTROUTING -s 10.88.0.2/32 -m comment --comment \"name: \\\"ipt\\\" id: \\\"i1\\\"\" -j {chain}"
            )),
        "{rules:?}"
    );
    assert!(masq_rules().is_empty(), "iptables asked for, nftables written: {:?}", masq_rules());
    // A DEL whose config names no backend still removes the iptables rules (the ADD may
    // have come from another version or the reference plugin), also with the netns gone.
    assert_eq!(call(&bin, "DEL", "i1", &ns1, &default).0, 0);
    sh("ip netns del i2");
    assert_eq!(call(&bin, "DEL", "i2", &ns2, &iptables).0, 0);
    assert_eq!(call(&bin, "DEL", "i2", &ns2, &iptables).0, 0);
    let rules = nat_rules();
    assert!(rules.iter().all(|r| !r.contains("id: \\\"i1") && !r.contains("id: \\\"i2")), "{rules:?}");
    assert_eq!(rules.iter().filter(|r| r.starts_with("-A POSTROUTING")).count(), 1, "{rules:?}");
    // GC of the iptables rules.
    let mut gc = iptables.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    assert_eq!(call(&bin, "GC", "", "", &gc).0, 0);
    assert!(nat_rules().is_empty(), "{:?}", nat_rules());
}

/// `nft list table bridge nat` with what differs between two runs (veth names, MACs,
/// handles) masked.
fn spoofcheck_table() -> String {
    let out = Command::new("nft").args(["list", "table", "bridge", "nat"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .map(|line| {
            let words: Vec<String> = line
                .split_whitespace()
                .map(|w| {
                    if w.starts_with("\"veth") {
                        "VETH".into()
                    } else if w.len() == 17 && w.matches(':').count() == 5 {
                        "MAC".into()
                    } else {
                        w.to_string()
                    }
                })
                .collect();
            words.join(" ")
        })
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn macspoofchk_drops_frames_from_other_macs() {
    if !inside_private_netns("macspoofchk_drops_frames_from_other_macs") {
        return;
    }
    let bin = berth_bin();
    let conf = network("1.0.0", "spoof", "br-spoof", json!({ "macspoofchk": true }));
    let (ns1, ns2) = (add_netns("s1"), add_netns("s2"));
    let (code, first) = call(&bin, "ADD", "s1", &ns1, &conf);
    assert_eq!(code, 0, "{first}");
    assert_eq!(call(&bin, "ADD", "s2", &ns2, &conf).0, 0);
    let table = sh("nft list table bridge nat");
    let veth = first["interfaces"][1]["name"].as_str().unwrap();
    let mac = first["interfaces"][2]["mac"].as_str().unwrap();
    for line in [
        format!("iifname \"{veth}\" jump cni-br-iface-s1-eth0 comment \"macspoofchk-s1-eth0\""),
        "jump cni-br-iface-s1-eth0-mac comment \"macspoofchk-s1-eth0\"".into(),
        format!("ether saddr {mac} return comment \"macspoofchk-s1-eth0\""),
        "drop comment \"macspoofchk-s1-eth0\"".into(),
    ] {
        assert!(table.contains(&line), "{line} missing from\n{table}");
    }
    assert!(ping(Some("s1"), "10.88.0.3"), "s1 cannot reach s2 with its own MAC");
    sh("ip netns exec s1 ip link set eth0 address 02:00:00:00:5f:01 && ip netns exec s2 ip neigh flush all");
    assert!(!ping(Some("s1"), "10.88.0.3"), "a frame from a spoofed MAC went through");
    sh(&format!("ip netns exec s1 ip link set eth0 address {mac} && ip netns exec s2 ip neigh flush all"));
    assert!(ping(Some("s1"), "10.88.0.3"), "s1 cannot reach s2 with its MAC back");
    // DEL takes the attachment's jump and chains, the other's stay; a second DEL is fine.
    assert_eq!(call(&bin, "DEL", "s1", &ns1, &conf).0, 0);
    assert_eq!(call(&bin, "DEL", "s1", &ns1, &conf).0, 0);
    let table = sh("nft list table bridge nat");
    assert!(!table.contains("s1-eth0") && table.contains("cni-br-iface-s2-eth0-mac"), "{table}");
    sh("ip netns del s2");
    assert_eq!(call(&bin, "DEL", "s2", &ns2, &conf).0, 0);
    assert!(!sh("nft list table bridge nat").contains("cni-br-iface"));

    // The same table as the reference bridge writes for the same attachment.
    if !reference_ready("macspoofchk_drops_frames_from_other_macs") {
        return;
    }
    let theirs = bin_dir("reference-bin", &[]);
    let mut tables = Vec::new();
    for (bin, name) in [(&bin, "ours"), (&theirs, "theirs")] {
        let mut conf = network("1.0.0", "spoofdiff", &format!("br-sp{name}"), json!({ "macspoofchk": true }));
        conf["ipam"]["dataDir"] = format!("/run/ipam-sp{name}").into();
        let ns = add_netns(&format!("sp{name}"));
        let (code, result) = call(bin, "ADD", "same", &ns, &conf);
        assert_eq!(code, 0, "{name}: {result}");
        tables.push(spoofcheck_table());
        assert_eq!(call(bin, "DEL", "same", &ns, &conf).0, 0);
        tables.push(spoofcheck_table());
    }
    assert_eq!(tables[0], tables[2], "after ADD, ours:\n{}\ntheirs:\n{}", tables[0], tables[2]);
    assert_eq!(tables[1], tables[3], "after DEL, ours:\n{}\ntheirs:\n{}", tables[1], tables[3]);
}

/// Whether this kernel's bridges filter VLANs (CONFIG_BRIDGE_VLAN_FILTERING).
fn kernel_filters_vlans() -> bool {
    let works = succeeds("ip link add br-probe type bridge vlan_filtering 1");
    let _ = succeeds("ip link del br-probe");
    works
}

#[test]
fn vlan_ports_isolate_and_carry_the_gateway() {
    if !inside_private_netns("vlan_ports_isolate_and_carry_the_gateway") {
        return;
    }
    let bin = berth_bin();
    let vlan =
        |id: u16, gateway: bool| network("1.0.0", "vlans", "br-vlan", json!({ "vlan": id, "isGateway": gateway }));
    if !kernel_filters_vlans() {
        // Refused as the kernel's lack, naming the key, and nothing is left behind; the
        // reference plugin cannot do it here either.
        let (code, error) = call(&bin, "ADD", "v1", &add_netns("v1"), &vlan(100, true));
        assert_eq!((code, error["code"].clone()), (1, json!(2)), "{error}");
        assert!(
            error["msg"].as_str().unwrap().contains("vlan 100")
                && error["msg"].as_str().unwrap().contains("CONFIG_BRIDGE_VLAN_FILTERING"),
            "{error}"
        );
        assert!(!sh("ip -o link").contains("br-vlan") && !sh("ip netns exec v1 ip -o link").contains("eth0"));
        assert_eq!(sh("ls /run/ipam-vlans/vlans").split_whitespace().filter(|f| f.starts_with("10.")).count(), 0);
        if reference_ready("vlan_ports_isolate_and_carry_the_gateway") {
            assert_ne!(call(&bin_dir("reference-bin", &[]), "ADD", "v1", "/run/netns/v1", &vlan(100, true)).0, 0);
        }
        return;
    }
    let (na, nb, nc) = (add_netns("va"), add_netns("vb"), add_netns("vc"));
    let (code, a) = call(&bin, "ADD", "va", &na, &vlan(100, true));
    assert_eq!(code, 0, "{a}");
    assert_eq!(a["interfaces"][3]["name"], "br-vlan.100", "the VLAN gateway is reported");
    assert_eq!(call(&bin, "ADD", "vb", &nb, &vlan(100, true)).0, 0);
    assert_eq!(call(&bin, "ADD", "vc", &nc, &vlan(200, false)).0, 0);
    assert!(sh("ip -o addr show br-vlan.100").contains("10.88.0.1/24"));
    let port = a["interfaces"][1]["name"].as_str().unwrap();
    let vlans = sh(&format!("bridge -j vlan show dev {port}"));
    assert!(vlans.contains("\"vlan\":100") && !vlans.contains("\"vlan\":1,"), "{vlans}");
    assert!(ping(Some("va"), "10.88.0.3"), "same VLAN: not reachable");
    assert!(ping(Some("va"), "10.88.0.1"), "the VLAN's gateway: not reachable");
    assert!(!ping(Some("va"), "10.88.0.4"), "another VLAN: reachable");
    // A trunk port carries its VLANs tagged and VLAN 1 untagged.
    let trunk =
        network("1.0.0", "vlans", "br-vlan", json!({ "vlanTrunk": [{ "id": 7 }, { "minID": 10, "maxID": 12 }] }));
    let (code, t) = call(&bin, "ADD", "vt", &add_netns("vt"), &trunk);
    assert_eq!(code, 0, "{t}");
    let vlans = sh(&format!("bridge -j vlan show dev {}", t["interfaces"][1]["name"].as_str().unwrap()));
    for id in [7, 10, 11, 12, 1] {
        assert!(vlans.contains(&format!("\"vlan\":{id}")), "{id} missing: {vlans}");
    }
}

#[test]
fn wrong_types_are_refused_and_unknown_keys_ignored_as_by_the_reference() {
    let test = "wrong_types_are_refused_and_unknown_keys_ignored_as_by_the_reference";
    if !inside_private_netns(test) || !reference_ready(test) {
        return;
    }
    let ours = berth_bin();
    let theirs = bin_dir("reference-bin", &[]);
    // Each is refused by both before anything is made; berth names the key with code 7.
    for (key, value, expected) in [
        ("mtu", json!("1500"), "expected u32"),
        ("ipMasq", json!("true"), "expected a boolean"),
        ("isGateway", json!(1), "expected a boolean"),
    ] {
        let conf = network("1.0.0", "typed", "br-typed", json!({ key: value }));
        let ns = add_netns(&format!("t-{key}"));
        let (exit, error) = call(&ours, "ADD", "t1", &ns, &conf);
        assert_eq!((exit, error["code"].clone()), (1, json!(7)), "{key}: {error}");
        let msg = error["msg"].as_str().unwrap();
        assert!(
            msg.starts_with(&format!("invalid network config: \"{key}\": invalid type: ")) && msg.ends_with(expected),
            "{key}: {error}"
        );
        let (their_exit, their_error) = call(&theirs, "ADD", "t1", &ns, &conf);
        assert_eq!(their_exit, 1, "the reference took {key}: {value}: {their_error}");
        assert!(their_error["msg"].as_str().unwrap().contains(&format!("NetConf.{key} of type")), "{their_error}");
        assert!(
            !sh("ip -o link").contains("br-typed")
                && !sh(&format!("ip netns exec t-{key} ip -o link")).contains("eth0"),
            "a refused ADD made links"
        );
        assert!(!Path::new("/run/ipam-typed").exists(), "a refused ADD called IPAM");
    }
    // Keys neither knows, at the top and in ipam: ignored.
    let mut conf = network(
        "1.0.0",
        "unknown",
        "br-unknown",
        json!({ "isGateway": true, "someday": { "x": [1, 2] }, "hairpinMode": null }),
    );
    conf["ipam"]["someday"] = json!("yes");
    let ns = add_netns("u1");
    let (code, result) = call(&ours, "ADD", "u1", &ns, &conf);
    assert_eq!(code, 0, "{result}");
    assert_eq!(result["ips"][0]["address"], "10.88.0.2/24");
    assert!(sh("ip -o addr show br-unknown").contains("10.88.0.1/24"));
    assert_eq!(call(&ours, "DEL", "u1", &ns, &conf).0, 0);
    let ns = add_netns("u2");
    let (code, result) = call(&theirs, "ADD", "u2", &ns, &conf);
    assert_eq!(code, 0, "the reference refused unknown keys: {result}");
    assert_eq!(call(&theirs, "DEL", "u2", &ns, &conf).0, 0);
}
