//! portmap, each test inside a private network namespace it creates (the test re-runs itself
//! under `unshare -n -m` with a tmpfs on /run; a "test host" and the containers are
//! namespaces made inside it): published ports answering tcp and udp from a test host, from
//! the host on 127.0.0.1, from another container and from the container itself (hairpin),
//! on one host address and over IPv6, with each backend; sctp rules; DEL, DEL without netns
//! or prevResult, repeated DEL and GC leaving no rule, element or conntrack entry;
//! conflicts refused naming the holder, also between parallel ADDs; 1000 ports; the iptables rules compared with the
//! reference portmap 1.1.1's for the same configs; chains mixing berth's and the reference
//! plugins; keys of the wrong type.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

#[path = "support/plugin_bin.rs"]
mod plugin_bin;
#[path = "support/private_netns.rs"]
mod private_netns;
use plugin_bin::{bin_dir, call};
use private_netns::{inside_private_netns, sh, REFERENCE_DIR};

const TEST_HOST: &str = "192.168.77.1";
const TEST_HOST_V6: &str = "fd77::1";

fn reference_ready(test: &str) -> bool {
    let found = Path::new(REFERENCE_DIR).join("portmap").exists();
    if !found {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{test} needs Debian's containernetworking-plugins");
    }
    found
}

/// What `script` prints, or None when it fails.
fn try_sh(script: &str) -> Option<String> {
    let out = Command::new("sh").arg("-c").arg(script).stderr(Stdio::null()).output().unwrap();
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn berth_bin() -> PathBuf {
    bin_dir("berth-bin", &["bridge", "host-local", "portmap"])
}

fn add_netns(name: &str) -> String {
    sh(&format!("ip netns add {name} && ip netns exec {name} ip link set lo up"));
    format!("/run/netns/{name}")
}

/// A bridge network (IPv4, and IPv6 with `v6`) with its own bridge and IPAM directory, as
/// podman writes one (hairpin mode: a container reaches its own published port).
fn bridge_conf(name: &str, v6: bool) -> Value {
    let mut ranges = vec![json!([{ "subnet": "10.88.0.0/24" }])];
    if v6 {
        ranges.push(json!([{ "subnet": "fd00:88::/64" }]));
    }
    json!({
        "cniVersion": "1.0.0", "name": name, "type": "bridge", "bridge": format!("br-{name}"), "isGateway": true,
        "ipMasq": true, "hairpinMode": true,
        "ipam": { "type": "host-local", "dataDir": format!("/run/ipam-{name}"), "ranges": ranges, "routes": [{ "dst": "0.0.0.0/0" }, { "dst": "::/0" }] }
    })
}

/// The portmap entry of the same network's chain, with `keys` and the mappings.
fn portmap_conf(name: &str, keys: Value, mappings: Value, prev: Option<&Value>) -> Value {
    let mut conf = json!({ "cniVersion": "1.0.0", "name": name, "type": "portmap", "capabilities": { "portMappings": true }, "runtimeConfig": { "portMappings": mappings } });
    for (k, v) in keys.as_object().unwrap() {
        conf[k] = v.clone();
    }
    if let Some(prev) = prev {
        conf["prevResult"] = prev.clone();
    }
    conf
}

/// The chain's ADD for one container: bridge, then portmap with the bridge's result.
/// Returns portmap's exit code and output, and the bridge's result.
fn attach(bin: &Path, id: &str, bridge: &Value, keys: Value, mappings: Value) -> (i32, Value, Value) {
    let ns = format!("/run/netns/{id}");
    if !Path::new(&ns).exists() {
        add_netns(id);
    }
    let (code, result) = call(bin, "bridge", "ADD", id, &ns, bridge);
    assert_eq!(code, 0, "bridge ADD {id}: {result}");
    let conf = portmap_conf(bridge["name"].as_str().unwrap(), keys, mappings, Some(&result));
    let (code, out) = call(bin, "portmap", "ADD", id, &ns, &conf);
    (code, out, result)
}

/// A test host: a namespace on a veth to the host, the host being TEST_HOST / TEST_HOST_V6.
fn make_test_host() {
    sh(&format!(
        "ip netns add th && ip link add th0 type veth peer name eth0 netns th \
         && ip addr add {TEST_HOST}/24 dev th0 && ip -6 addr add {TEST_HOST_V6}/64 dev th0 nodad && ip link set th0 up \
         && ip netns exec th sh -ec 'ip link set lo up; ip addr add 192.168.77.2/24 dev eth0; ip -6 addr add fd77::2/64 dev eth0 nodad; ip link set eth0 up'"
    ));
}

/// Servers started in containers, stopped (by their pid) when dropped.
struct Servers(Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A UDP server answering every datagram with `<name>:<datagram>`, on every address.
const UDP_ECHO: &str = "import socket,sys\ns=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)\ns.setsockopt(socket.IPPROTO_IPV6,socket.IPV6_V6ONLY,0)\ns.bind(('::',int(sys.argv[2])))\nwhile True:\n d,a=s.recvfrom(100)\n s.sendto(sys.argv[1].encode()+b':'+d,a)\n";

impl Servers {
    /// An HTTP server on port 80 and a UDP echo on port 9000 in container `name`; each
    /// answers with the container's name.
    fn start(&mut self, name: &str) {
        let www = format!("/run/www-{name}");
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(format!("{www}/index.html"), name).unwrap();
        let spawn = |args: &[&str]| {
            Command::new("ip")
                .args(["netns", "exec", name])
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        };
        self.0.push(spawn(&["busybox", "httpd", "-f", "-p", "80", "-h", &www]));
        self.0.push(spawn(&["python3", "-c", UDP_ECHO, name, "9000"]));
        for _ in 0..50 {
            if http(Some(name), "127.0.0.1:80").as_deref() == Some(name) && udp(Some(name), "127.0.0.1", 9000).is_some()
            {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("the servers in {name} did not start");
    }
}

fn in_netns(netns: Option<&str>) -> String {
    netns.map(|n| format!("ip netns exec {n} ")).unwrap_or_default()
}

/// The body of http://`address`/ fetched from `netns` (the host with None).
fn http(netns: Option<&str>, address: &str) -> Option<String> {
    try_sh(&format!("{}timeout 5 busybox wget -qO- http://{address}/", in_netns(netns)))
}

/// The answer of the UDP server at `host`:`port` to one datagram sent from `netns`.
fn udp(netns: Option<&str>, host: &str, port: u16) -> Option<String> {
    let family = if host.contains(':') { "AF_INET6" } else { "AF_INET" };
    try_sh(&format!(
        "{}python3 -c \"import socket; s=socket.socket(socket.{family},socket.SOCK_DGRAM); s.settimeout(2); s.sendto(b'ping',('{host}',{port})); print(s.recvfrom(100)[0].decode())\"",
        in_netns(netns)
    ))
    .map(|s| s.trim().to_string())
}

/// How often the nftables table and the iptables tables mention the attachment: elements,
/// rules, chains.
fn mentions(network: &str, id: &str) -> (usize, usize) {
    let nft = try_sh("nft list table inet berth-portmap").unwrap_or_default();
    let in_nft = nft.matches(&format!("net: {network}, id: {id}\"")).count();
    let chain = format!("CNI-DN-{}", &sh(&format!("printf %s '{network}{id}' | sha512sum"))[..21]);
    let saved = sh("iptables-save -t nat; ip6tables-save -t nat");
    let in_iptables = saved
        .lines()
        .filter(|l| l.contains(&chain) || l.contains(&format!("name: \\\"{network}\\\" id: \\\"{id}\\\"")))
        .count();
    (in_nft, in_iptables)
}

/// The UDP conntrack entries to `port`.
fn udp_conntrack(port: u16) -> usize {
    std::fs::read_to_string("/proc/net/nf_conntrack")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" udp ") && l.contains(&format!("dport={port} ")))
        .count()
}

#[test]
fn published_ports_answer_from_everywhere_with_either_backend() {
    if !inside_private_netns("published_ports_answer_from_everywhere_with_either_backend") {
        return;
    }
    let bin = berth_bin();
    make_test_host();
    for backend in ["nftables", "iptables"] {
        let name = format!("pub{}", &backend[..3]);
        let bridge = bridge_conf(&name, true);
        let keys = json!({ "backend": backend });
        let (one, two) = (format!("{name}-1"), format!("{name}-2"));
        let mappings = json!([
            { "hostPort": 8080, "containerPort": 80, "protocol": "tcp" },
            { "hostPort": 8053, "containerPort": 9000, "protocol": "udp" },
            { "hostPort": 8081, "containerPort": 80, "protocol": "tcp", "hostIP": TEST_HOST },
            { "hostPort": 8082, "containerPort": 80, "protocol": "sctp" }
        ]);
        // The other container first: its bridge's nat rules turn connection tracking on.
        let (code, out, _) = attach(&bin, &two, &bridge, keys.clone(), json!([]));
        assert_eq!(code, 0, "{backend}: {out}");
        // A stale entry: a datagram to the port before it is published.
        assert_eq!(udp(Some("th"), TEST_HOST, 8053), None);
        assert_eq!(udp_conntrack(8053), 1, "{backend}: the stale entry was not made");
        let (code, out, result) = attach(&bin, &one, &bridge, keys.clone(), mappings.clone());
        assert_eq!(code, 0, "{backend}: {out}");
        assert_eq!(out, result, "{backend}: portmap does not pass the prevResult on unchanged");
        assert_eq!(udp_conntrack(8053), 0, "{backend}: ADD left the stale UDP entry");
        let mut servers = Servers(Vec::new());
        servers.start(&one);
        let me = Some(one.as_str());
        let port = format!("{TEST_HOST}:8080");
        assert_eq!(http(Some("th"), &port).as_deref(), me, "{backend}: tcp from the test host");
        assert_eq!(http(None, "127.0.0.1:8080").as_deref(), me, "{backend}: tcp from the host on 127.0.0.1");
        assert_eq!(
            sh(&format!("cat /proc/sys/net/ipv4/conf/br-{name}/route_localnet")).trim(),
            "1",
            "{backend}: route_localnet"
        );
        assert_eq!(http(Some(&two), &port).as_deref(), me, "{backend}: tcp from another container");
        assert_eq!(http(Some(&one), &port).as_deref(), me, "{backend}: tcp hairpin");
        assert_eq!(http(Some("th"), &format!("[{TEST_HOST_V6}]:8080")).as_deref(), me, "{backend}: tcp over IPv6");
        let echo = format!("{one}:ping");
        assert_eq!(udp(Some("th"), TEST_HOST, 8053), Some(echo.clone()), "{backend}: udp from the test host");
        assert_eq!(udp(None, "127.0.0.1", 8053), Some(echo.clone()), "{backend}: udp from the host on 127.0.0.1");
        assert_eq!(udp(Some(&two), TEST_HOST, 8053), Some(echo.clone()), "{backend}: udp from another container");
        assert_eq!(udp(Some("th"), TEST_HOST_V6, 8053), Some(echo), "{backend}: udp over IPv6");
        // A mapping on one host address answers there only.
        assert_eq!(http(Some("th"), &format!("{TEST_HOST}:8081")).as_deref(), me, "{backend}: on its hostIP");
        assert_eq!(http(None, "127.0.0.1:8081"), None, "{backend}: a hostIP mapping answered on 127.0.0.1");
        // sctp (not in this kernel): its rules only.
        let (nft, iptables) = (
            try_sh("nft list table inet berth-portmap").unwrap_or_default(),
            sh("iptables-save -t nat; ip6tables-save -t nat"),
        );
        if backend == "nftables" {
            let note = format!("comment \"{}\"", nft.split("comment \"").nth(1).unwrap().split('"').next().unwrap());
            assert!(nft.contains(&format!("sctp . 8082 {note} : 10.88.0.3 . 80")), "{nft}");
            assert!(nft.contains(&format!("sctp . 8082 {note} : fd00:88::3 . 80")), "{nft}");
        } else {
            assert!(
                iptables.contains("-p sctp -m sctp --dport 8082 -j DNAT --to-destination 10.88.0.3:80"),
                "{iptables}"
            );
            assert!(iptables.contains("-p sctp -m sctp --dport 8082 -j DNAT --to-destination [fd00:88::3]:80"));
        }
        // CHECK passes while published; STATUS answers.
        let ns = format!("/run/netns/{one}");
        let check = portmap_conf(&name, keys.clone(), mappings.clone(), Some(&result));
        assert_eq!(call(&bin, "portmap", "CHECK", &one, &ns, &check).0, 0, "{backend}: CHECK");
        let mut status = portmap_conf(&name, keys.clone(), json!([]), None);
        status["cniVersion"] = "1.1.0".into();
        assert_eq!(call(&bin, "portmap", "STATUS", "", "", &status).0, 0, "{backend}: STATUS");
        drop(servers);
        // DEL takes everything: rules, elements, the UDP conntrack entries.
        assert!(udp_conntrack(8053) > 0);
        assert_eq!(call(&bin, "portmap", "DEL", &one, &ns, &check).0, 0);
        assert_eq!(mentions(&name, &one), (0, 0), "{backend}: DEL left rules");
        assert_eq!(udp_conntrack(8053), 0, "{backend}: DEL left UDP conntrack entries");
        assert_ne!(call(&bin, "portmap", "CHECK", &one, &ns, &check).0, 0, "{backend}: CHECK after DEL");
        for id in [&one, &two] {
            assert_eq!(call(&bin, "bridge", "DEL", id, &format!("/run/netns/{id}"), &bridge).0, 0);
        }
        sh(&format!("ip link del br-{name}"));
    }
}

#[test]
fn del_without_netns_repeated_del_and_gc_leave_nothing() {
    if !inside_private_netns("del_without_netns_repeated_del_and_gc_leave_nothing") {
        return;
    }
    let bin = berth_bin();
    for backend in ["nftables", "iptables"] {
        let name = format!("gone{}", &backend[..3]);
        let bridge = bridge_conf(&name, true);
        let keys = json!({ "backend": backend });
        let ids: Vec<String> = (1..=3).map(|n| format!("{name}-{n}")).collect();
        for (n, id) in ids.iter().enumerate() {
            let mappings = json!([{ "hostPort": 7000 + n, "containerPort": 80, "protocol": "tcp" }, { "hostPort": 7100 + n, "containerPort": 9000, "protocol": "udp" }]);
            let (code, out, _) = attach(&bin, id, &bridge, keys.clone(), mappings);
            assert_eq!(code, 0, "{backend}: {out}");
            assert_ne!(mentions(&name, id), (0, 0));
            // A UDP entry to each port, as a client leaves one.
            let _ = udp(None, "127.0.0.1", 7100 + n as u16);
            assert_eq!(udp_conntrack(7100 + n as u16), 1, "{backend}: no conntrack entry for {id}");
        }
        // DEL with the namespace gone and neither prevResult nor runtimeConfig; repeated.
        sh(&format!("ip netns del {}", ids[0]));
        let bare = json!({ "cniVersion": "1.0.0", "name": name, "type": "portmap" });
        for _ in 0..2 {
            let (code, out) = call(&bin, "portmap", "DEL", &ids[0], &format!("/run/netns/{}", ids[0]), &bare);
            assert_eq!(code, 0, "{backend}: {out}");
        }
        assert_eq!(mentions(&name, &ids[0]), (0, 0), "{backend}: DEL without netns left rules");
        assert_eq!(udp_conntrack(7100), 0, "{backend}: DEL left the UDP entry");
        assert_ne!(mentions(&name, &ids[1]), (0, 0), "{backend}: DEL took another attachment's rules");
        // GC keeps the attachments listed and removes the rest.
        let mut gc = bare.clone();
        gc["cniVersion"] = "1.1.0".into();
        gc["cni.dev/valid-attachments"] = json!([{ "containerID": ids[2], "ifname": "eth0" }]);
        let (code, out) = call(&bin, "portmap", "GC", "", "", &gc);
        assert_eq!(code, 0, "{backend}: {out}");
        assert_eq!(mentions(&name, &ids[1]), (0, 0), "{backend}: GC left an attachment not listed");
        assert_eq!(udp_conntrack(7101), 0, "{backend}: GC left the UDP entry");
        assert_ne!(mentions(&name, &ids[2]), (0, 0), "{backend}: GC removed a listed attachment");
        assert_eq!(udp_conntrack(7102), 1, "{backend}: GC removed a listed attachment's UDP entry");
        gc["cni.dev/valid-attachments"] = json!([]);
        assert_eq!(call(&bin, "portmap", "GC", "", "", &gc).0, 0);
        assert_eq!(mentions(&name, &ids[2]), (0, 0));
        assert_eq!(udp_conntrack(7102), 0);
    }
    let nft = sh("nft list table inet berth-portmap");
    assert!(!nft.contains("elements") && !nft.contains("masquerade"), "{nft}");
}

#[test]
fn a_port_published_by_another_attachment_is_refused_naming_it() {
    if !inside_private_netns("a_port_published_by_another_attachment_is_refused_naming_it") {
        return;
    }
    let bin = berth_bin();
    let bridge = bridge_conf("taken", false);
    let tcp = |port: u16, host_ip: Option<&str>| {
        let mut m = json!({ "hostPort": port, "containerPort": 80, "protocol": "tcp" });
        if let Some(ip) = host_ip {
            m["hostIP"] = ip.into();
        }
        m
    };
    let (code, out, first) =
        attach(&bin, "holder", &bridge, json!({}), json!([tcp(8080, None), tcp(8090, Some("127.0.0.1"))]));
    assert_eq!(code, 0, "{out}");
    let (code, out, _) =
        attach(&bin, "ipt-holder", &bridge, json!({ "backend": "iptables" }), json!([tcp(8070, None)]));
    assert_eq!(code, 0, "{out}");
    let (code, out, late) = attach(&bin, "late", &bridge, json!({}), json!([]));
    assert_eq!(code, 0, "{out}");
    for (asked, holder, backend) in [
        (tcp(8080, None), "holder", "nftables"),
        (tcp(8080, Some("127.0.0.1")), "holder", "nftables"),
        (tcp(8090, None), "holder", "iptables"),
        (tcp(8070, None), "ipt-holder", "nftables"),
        (tcp(8070, Some("0.0.0.0")), "ipt-holder", "iptables"),
    ] {
        let conf = portmap_conf("taken", json!({ "backend": backend }), json!([asked.clone()]), Some(&late));
        let (code, error) = call(&bin, "portmap", "ADD", "late", "/run/netns/late", &conf);
        assert_eq!((code, error["code"].clone()), (1, json!(101)), "{asked} over {backend}: {error}");
        let msg = error["msg"].as_str().unwrap();
        assert!(
            msg.contains(&format!("container {holder} on network taken"))
                && msg.contains(&format!("{}/tcp", asked["hostPort"])),
            "{msg}"
        );
        assert_eq!(mentions("taken", "late"), (0, 0), "a refused ADD wrote rules");
    }
    // Not a conflict: another protocol, another address, and the holder's own repeated ADD.
    let other = json!([{ "hostPort": 8080, "containerPort": 80, "protocol": "udp" }, tcp(8090, Some(TEST_HOST))]);
    let (code, out) =
        call(&bin, "portmap", "ADD", "late", "/run/netns/late", &portmap_conf("taken", json!({}), other, Some(&late)));
    assert_eq!(code, 0, "{out}");
    let again = portmap_conf("taken", json!({}), json!([tcp(8080, None), tcp(8090, Some("127.0.0.1"))]), Some(&first));
    let (code, out) = call(&bin, "portmap", "ADD", "holder", "/run/netns/holder", &again);
    assert_eq!(code, 0, "{out}");
    assert_eq!(mentions("taken", "holder").0, 2 + 2, "a repeated ADD doubled the elements or rules");
    for id in ["holder", "ipt-holder", "late"] {
        assert_eq!(call(&bin, "portmap", "DEL", id, "", &again).0, 0);
        assert_eq!(mentions("taken", id), (0, 0));
    }
    // Names long enough that nftables keeps only part of the comment: the attachment is
    // still told apart (repeated ADD, CHECK, DEL) and named.
    let long = "a-network-name-long-enough-to-cut-comments";
    let id = "0123456789abcdef".repeat(4);
    let mut bridge = bridge_conf(long, false);
    bridge["bridge"] = "br-long".into();
    let (code, out, result) = attach(&bin, &id, &bridge, json!({}), json!([tcp(8060, None)]));
    assert_eq!(code, 0, "{out}");
    let conf = portmap_conf(long, json!({}), json!([tcp(8060, None)]), Some(&result));
    let ns = format!("/run/netns/{id}");
    assert_eq!(call(&bin, "portmap", "ADD", &id, &ns, &conf).0, 0, "a repeated ADD refused itself");
    assert_eq!(call(&bin, "portmap", "CHECK", &id, &ns, &conf).0, 0);
    let conf_late = portmap_conf("taken", json!({}), json!([tcp(8060, None)]), Some(&late));
    let (code, error) = call(&bin, "portmap", "ADD", "late", "/run/netns/late", &conf_late);
    assert_eq!(code, 1, "{error}");
    assert!(error["msg"].as_str().unwrap().contains(&format!("container {}", &id[..20])), "{error}");
    let listed =
        || try_sh("nft list table inet berth-portmap").unwrap_or_default().matches(&format!("net: {long}")).count();
    assert_eq!(listed(), 3, "an element and two masquerade rules");
    assert_eq!(call(&bin, "portmap", "DEL", &id, "", &conf).0, 0);
    assert_eq!(listed(), 0);
}

#[test]
fn a_thousand_ports_publish_and_go() {
    if !inside_private_netns("a_thousand_ports_publish_and_go") {
        return;
    }
    let bin = berth_bin();
    let mappings: Vec<Value> =
        (0..1000).map(|n| json!({ "hostPort": 20000 + n, "containerPort": 80, "protocol": "tcp" })).collect();
    for backend in ["nftables", "iptables"] {
        let name = format!("many{}", &backend[..3]);
        let bridge = bridge_conf(&name, false);
        let id = format!("{name}-1");
        let (code, out, result) = attach(&bin, &id, &bridge, json!({ "backend": backend }), json!(mappings));
        assert_eq!(code, 0, "{backend}: {out}");
        let (nft, iptables) = mentions(&name, &id);
        if backend == "nftables" {
            assert_eq!(nft, 1000 + 2, "1000 elements and two masquerade rules");
        } else {
            // Three rules per port and 67 multiport entries of at most 15 ports.
            assert_eq!(iptables, 1 + 3000 + 67);
        }
        let mut servers = Servers(Vec::new());
        servers.start(&id);
        assert_eq!(http(None, "127.0.0.1:20999").as_deref(), Some(id.as_str()), "{backend}: the last port");
        drop(servers);
        let conf = portmap_conf(&name, json!({ "backend": backend }), json!(mappings), Some(&result));
        assert_eq!(call(&bin, "portmap", "DEL", &id, "", &conf).0, 0);
        assert_eq!(mentions(&name, &id), (0, 0), "{backend}");
        // The next round's bridge takes the same subnet.
        assert_eq!(call(&bin, "bridge", "DEL", &id, &format!("/run/netns/{id}"), &bridge).0, 0);
        sh(&format!("ip link del br-{name}"));
    }
}

/// The nat tables as iptables-save prints them, without its comment lines and counters.
fn nat_tables() -> String {
    sh("iptables-save -t nat; ip6tables-save -t nat")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.replace(" [0:0]", ""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn iptables_rules_are_the_reference_portmaps() {
    let test = "iptables_rules_are_the_reference_portmaps";
    if !inside_private_netns(test) || !reference_ready(test) {
        return;
    }
    let ours = berth_bin();
    let theirs = bin_dir("reference-bin", &["bridge", "host-local"]);
    let mappings = json!([
        { "hostPort": 8080, "containerPort": 80, "protocol": "tcp" },
        { "hostPort": 8053, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1" },
        { "hostPort": 8054, "containerPort": 53, "protocol": "udp", "hostIP": "0.0.0.0" },
        { "hostPort": 8132, "containerPort": 132, "protocol": "sctp", "hostIP": "fd00::1" }
    ]);
    let many: Vec<Value> =
        (0..20).map(|n| json!({ "hostPort": 9000 + n, "containerPort": 80, "protocol": "tcp" })).collect();
    for (case, keys, mappings) in [
        ("defaults", json!({}), mappings.clone()),
        ("no snat", json!({ "snat": false }), mappings.clone()),
        ("mark bit 5", json!({ "markMasqBit": 5 }), mappings.clone()),
        ("external mark chain", json!({ "externalSetMarkChain": "KUBE-MARK-MASQ" }), mappings.clone()),
        (
            "conditions",
            json!({ "conditionsV4": ["-s", "1.2.3.4/32"], "conditionsV6": ["!", "-s", "::1/128"] }),
            mappings.clone(),
        ),
        ("twenty ports", json!({}), json!(many)),
    ] {
        let mut tables = Vec::new();
        for bin in [&ours, &theirs] {
            sh("iptables -t nat -F; iptables -t nat -X; ip6tables -t nat -F; ip6tables -t nat -X; \
                iptables -t nat -N KUBE-MARK-MASQ; ip6tables -t nat -N KUBE-MARK-MASQ");
            let mut bridge = bridge_conf("diff", true);
            // Each run its own address store, so both give the container the same address.
            bridge["ipam"]["dataDir"] = format!("/run/ipam-diff-{}", tables.len()).into();
            let mut keys = keys.clone();
            keys["backend"] = "iptables".into();
            let (code, out, result) = attach(bin, "same", &bridge, keys.clone(), mappings.clone());
            assert_eq!(code, 0, "{case}: {out}");
            assert_eq!(out, result, "{case}: the result passed on");
            let after_add = nat_tables();
            let conf = portmap_conf("diff", keys, mappings.clone(), Some(&result));
            assert_eq!(call(bin, "portmap", "DEL", "same", "/run/netns/same", &conf).0, 0);
            assert_eq!(call(bin, "bridge", "DEL", "same", "/run/netns/same", &bridge).0, 0);
            tables.push((after_add, nat_tables()));
        }
        assert!(tables[1].0.contains("CNI-DN-"), "{case}: the reference wrote no chain:\n{}", tables[1].0);
        assert_eq!(tables[0].0, tables[1].0, "{case}: after ADD, berth (left) and the reference differ");
        assert_eq!(tables[0].1, tables[1].1, "{case}: after DEL, berth (left) and the reference differ");
    }
}

#[test]
fn chains_mixing_berth_and_the_reference_plugins() {
    let test = "chains_mixing_berth_and_the_reference_plugins";
    if !inside_private_netns(test) || !reference_ready(test) {
        return;
    }
    make_test_host();
    // The reference bridge with berth's portmap; berth's bridge with the reference portmap.
    for (bin, name) in [(bin_dir("mix-a", &["portmap"]), "mixa"), (bin_dir("mix-b", &["bridge", "host-local"]), "mixb")]
    {
        let bridge = bridge_conf(name, false);
        let id = format!("{name}-1");
        let mapping = json!([{ "hostPort": 8080, "containerPort": 80, "protocol": "tcp" }, { "hostPort": 8053, "containerPort": 9000, "protocol": "udp" }]);
        let (code, out, result) = attach(&bin, &id, &bridge, json!({}), mapping.clone());
        assert_eq!(code, 0, "{name}: {out}");
        assert_eq!(out["ips"], result["ips"], "{name}: the result passed on");
        let mut servers = Servers(Vec::new());
        servers.start(&id);
        assert_eq!(http(Some("th"), &format!("{TEST_HOST}:8080")).as_deref(), Some(id.as_str()), "{name}: tcp");
        assert_eq!(udp(Some("th"), TEST_HOST, 8053), Some(format!("{id}:ping")), "{name}: udp");
        assert_eq!(http(None, "127.0.0.1:8080").as_deref(), Some(id.as_str()), "{name}: 127.0.0.1");
        drop(servers);
        let conf = portmap_conf(name, json!({}), mapping, Some(&result));
        let ns = format!("/run/netns/{id}");
        assert_eq!(call(&bin, "portmap", "DEL", &id, &ns, &conf).0, 0);
        assert_eq!(call(&bin, "bridge", "DEL", &id, &ns, &bridge).0, 0);
        assert_eq!(mentions(name, &id), (0, 0), "{name}");
        assert_eq!(http(Some("th"), &format!("{TEST_HOST}:8080")), None, "{name}: answered after DEL");
        // The reference bridge leaves its bridge, whose route would take the next network's.
        sh(&format!("ip link del br-{name}"));
    }
}

#[test]
fn wrong_types_are_refused_naming_the_key() {
    let test = "wrong_types_are_refused_naming_the_key";
    if !inside_private_netns(test) {
        return;
    }
    let bin = berth_bin();
    let prev = json!({ "cniVersion": "1.0.0", "ips": [{ "address": "10.88.0.2/24" }] });
    for (keys, key) in [
        (json!({ "snat": "true" }), "snat"),
        (json!({ "markMasqBit": "13" }), "markMasqBit"),
        (json!({ "masqAll": 1 }), "masqAll"),
        (json!({ "conditionsV4": "-s 1.2.3.4" }), "conditionsV4"),
        (json!({ "backend": ["nftables"] }), "backend"),
        (
            json!({ "runtimeConfig": { "portMappings": [{ "hostPort": "8080", "containerPort": 80 }] } }),
            "runtimeConfig.portMappings[0].hostPort",
        ),
        (
            json!({ "runtimeConfig": { "portMappings": [{ "hostPort": 8080, "containerPort": 80, "hostIP": 1 }] } }),
            "runtimeConfig.portMappings[0].hostIP",
        ),
    ] {
        let conf = portmap_conf(
            "typed",
            keys,
            json!([{ "hostPort": 8080, "containerPort": 80, "protocol": "tcp" }]),
            Some(&prev),
        );
        let (code, error) = call(&bin, "portmap", "ADD", "t1", "/run/netns/none", &conf);
        assert_eq!((code, error["code"].clone()), (1, json!(7)), "{key}: {error}");
        assert!(
            error["msg"].as_str().unwrap().starts_with(&format!("invalid network config: \"{key}\": invalid type: ")),
            "{key}: {error}"
        );
        assert_eq!(mentions("typed", "t1"), (0, 0));
    }
    // Unknown keys are ignored; no mappings: the prevResult passes through.
    let conf = portmap_conf("typed", json!({ "someday": { "x": 1 } }), json!([]), Some(&prev));
    let (code, out) = call(&bin, "portmap", "ADD", "t1", "/run/netns/none", &conf);
    assert_eq!((code, &out["ips"]), (0, &prev["ips"]), "{out}");
}

#[test]
fn parallel_adds_publish_each_port_once() {
    if !inside_private_netns("parallel_adds_publish_each_port_once") {
        return;
    }
    let bin = berth_bin();
    let bridge = bridge_conf("para", false);
    let ids: Vec<String> = (0..12).map(|n| format!("para-{n}")).collect();
    let results: Vec<Value> = ids.iter().map(|id| attach(&bin, id, &bridge, json!({}), json!([])).2).collect();
    // All at once (the table made by whichever ADD comes first), each container publishes
    // a port of its own, then asks for the same contested one: every own port is published,
    // the contested one exactly once.
    let outcomes: Vec<(i32, i32)> = std::thread::scope(|scope| {
        let runs: Vec<_> = ids
            .iter()
            .zip(&results)
            .enumerate()
            .map(|(n, (id, result))| {
                let bin = &bin;
                scope.spawn(move || {
                    let own = json!([{ "hostPort": 9100 + n, "containerPort": 80, "protocol": "tcp" }]);
                    let contested = json!([{ "hostPort": 9000, "containerPort": 80, "protocol": "udp" }]);
                    let ns = format!("/run/netns/{id}");
                    let own =
                        call(bin, "portmap", "ADD", id, &ns, &portmap_conf("para", json!({}), own, Some(result))).0;
                    let mut contested = portmap_conf("para", json!({}), contested, Some(result));
                    contested["name"] = "para-contested".into();
                    (own, call(bin, "portmap", "ADD", id, &ns, &contested).0)
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert!(outcomes.iter().all(|(own, _)| *own == 0), "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|(_, contested)| *contested == 0).count(), 1, "{outcomes:?}");
    let nft = sh("nft list table inet berth-portmap");
    assert_eq!(nft.matches("udp . 9000 comment").count(), 1, "{nft}");
    for id in &ids {
        assert_eq!(mentions("para", id).0, 1 + 2, "{id}: its element and masquerade rules\n{nft}");
    }
}
