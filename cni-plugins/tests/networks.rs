//! The `berth-cni` command line, run as a person or a runtime runs it, each test inside a
//! private network and mount namespace it creates (the test re-runs itself under
//! `unshare -n -m` with a tmpfs on /run, where its conf, bin and state dirs live, so all of
//! it goes when the test's namespaces do): networks created, listed, inspected and removed
//! with their errors; subnets chosen around other networks and host routes; internal
//! networks; containers attached through the chain (ADD, CHECK, DEL with the cached
//! prevResult, DEL without netns and repeated), a published port answered from a test
//! host; the hook mode and the hosts files it keeps.

#[path = "support/plugin_dir.rs"]
mod plugin_dir;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::{json, Value};

#[path = "support/private_netns.rs"]
mod private_netns;
use private_netns::{inside_private_netns, sh, succeeds};

/// berth-cni with private conf, bin and state dirs under the private /run.
struct Cli {
    conf: PathBuf,
    bin: PathBuf,
    state: PathBuf,
}

impl Cli {
    fn new() -> Cli {
        let root = Path::new("/run/berth-cni-test");
        let cli = Cli { conf: root.join("net.d"), bin: root.join("lib/cni"), state: root.join("state") };
        plugin_dir::fill(&cli.bin, Path::new(env!("CARGO_BIN_EXE_berth-cni")));
        cli
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_berth-cni"));
        command.args(args).arg("--conf-dir").arg(&self.conf).arg("--bin-dir").arg(&self.bin);
        command.arg("--state-dir").arg(&self.state);
        command
    }

    fn output(&self, args: &[&str]) -> Output {
        self.command(args).stdin(Stdio::null()).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(out.status.success(), "berth-cni {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command expected to fail; its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "berth-cni {args:?} should fail: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    fn conflist(&self, name: &str) -> Value {
        serde_json::from_slice(&std::fs::read(self.conf.join(format!("{name}.conflist"))).unwrap()).unwrap()
    }

    /// Runs `hook add|del ARGS` with `state` on stdin, as a runtime runs a hook.
    fn hook(&self, args: &[&str], state: &Value) -> Output {
        let mut child =
            self.command(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), state.to_string().as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }
}

fn subnets(network: &Value) -> Vec<String> {
    network["subnets"].as_array().unwrap().iter().map(|s| s["subnet"].as_str().unwrap().to_string()).collect()
}

#[test]
fn networks_are_created_listed_inspected_and_removed() {
    if !inside_private_netns("networks_are_created_listed_inspected_and_removed") {
        return;
    }
    let cli = Cli::new();
    assert_eq!(cli.ok(&["network", "create", "alpha"]), "alpha\n");
    let alpha = cli.conflist("alpha");
    let kinds: Vec<&str> = alpha["plugins"].as_array().unwrap().iter().map(|p| p["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["bridge", "portmap", "firewall", "tuning"], "{alpha}");
    let bridge = &alpha["plugins"][0];
    assert_eq!(
        (&bridge["bridge"], &bridge["isGateway"], &bridge["ipMasq"]),
        (&json!("berth1"), &json!(true), &json!(true))
    );
    assert_eq!(bridge["ipam"]["ranges"], json!([[{ "subnet": "10.90.0.0/24", "gateway": "10.90.0.1" }]]));
    assert_eq!(bridge["ipam"]["routes"], json!([{ "dst": "0.0.0.0/0" }]));
    assert_eq!(alpha["plugins"][1]["capabilities"], json!({ "portMappings": true }));

    // The next subnet skips alpha's and one the host routes.
    sh("ip link add route-a type veth peer name route-b && ip link set route-a up && ip route add 10.90.1.0/24 dev route-a");
    cli.ok(&["network", "create", "beta"]);
    let beta = cli.json(&["network", "inspect", "beta"]);
    assert_eq!((subnets(&beta), &beta["bridge"]), (vec!["10.90.2.0/24".to_string()], &json!("berth2")));

    // Errors say what is wrong.
    let refusals = [
        (vec!["alpha"], "network alpha already exists"),
        (vec!["gamma", "--subnet", "10.90.0.128/25"], "subnet 10.90.0.128/25 overlaps subnet 10.90.0.0/24"),
        (vec!["gamma", "--subnet", "10.90.1.0/24"], "overlaps the host route to 10.90.1.0/24"),
        (vec!["gamma", "--subnet", "10.1.0.5/24"], "its host bits are set (did you mean 10.1.0.0/24?)"),
        (vec!["gamma", "--subnet", "10.1.0.0/40"], "invalid subnet \"10.1.0.0/40\""),
        (vec!["gamma", "--subnet", "10.60.0.0/24", "--gateway", "10.50.0.1"], "gateway 10.50.0.1 is in none of"),
        (vec!["gamma", "--gateway", "10.50.0.1"], "needs the --subnet it belongs to"),
        (vec!["_under"], "invalid network name \"_under\""),
        (vec!["a/b"], "invalid network name \"a/b\""),
    ];
    for (args, why) in refusals {
        let mut full = vec!["network", "create"];
        full.extend(&args);
        let e = cli.fails(&full);
        assert!(e.contains(why), "{args:?}: {e}");
    }
    assert!(!cli.conf.join("gamma.conflist").exists());

    // IPv6: dual stack with --ipv6, v6 alone with a v6 --subnet; a chosen gateway.
    cli.ok(&["network", "create", "six", "--ipv6"]);
    let six = cli.json(&["network", "inspect", "six"]);
    let six_subnets = subnets(&six);
    assert_eq!(six_subnets.len(), 2, "{six}");
    assert!(six_subnets[0] == "10.90.3.0/24" && six_subnets[1].starts_with("fd") && six_subnets[1].ends_with("::/64"));
    assert_eq!(cli.conflist("six")["plugins"][0]["ipam"]["routes"], json!([{ "dst": "0.0.0.0/0" }, { "dst": "::/0" }]));
    cli.ok(&["network", "create", "vsix", "--subnet", "fd00:ab::/64"]);
    let vsix = cli.json(&["network", "inspect", "vsix"]);
    assert_eq!((subnets(&vsix), &vsix["ipv6"]), (vec!["fd00:ab::/64".to_string()], &json!(true)));
    cli.ok(&["network", "create", "gw", "--subnet", "10.70.0.0/24", "--gateway", "10.70.0.254"]);
    assert_eq!(
        cli.json(&["network", "inspect", "gw"])["subnets"],
        json!([{ "subnet": "10.70.0.0/24", "gateway": "10.70.0.254" }])
    );

    // Internal: no masquerading, no gateway, no default route.
    cli.ok(&["network", "create", "inside", "--internal"]);
    let inside = &cli.conflist("inside")["plugins"][0];
    assert_eq!((&inside["isGateway"], inside.get("ipMasq"), inside["ipam"].get("routes")), (&json!(false), None, None));
    assert_eq!(cli.json(&["network", "inspect", "inside"])["internal"], json!(true));

    // ls, as a table and as JSON.
    let table = cli.ok(&["network", "ls"]);
    for name in ["alpha", "beta", "gw", "inside", "six", "vsix"] {
        assert!(table.lines().any(|l| l.starts_with(&format!("{name} "))), "{name} not in\n{table}");
    }
    let listed = cli.json(&["network", "ls", "--format", "json"]);
    let names: Vec<&str> = listed.as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alpha", "beta", "gw", "inside", "six", "vsix"]);
    assert_eq!(listed[0]["dns"], json!(true));

    // The default network is made on first use and resolves no names.
    let default = cli.json(&["network", "inspect", "berth"]);
    assert_eq!(
        (&default["bridge"], &default["dns"], &default["containers"]),
        (&json!("berth0"), &json!(false), &json!([]))
    );

    // rm.
    assert!(cli.fails(&["network", "inspect", "nothere"]).contains("network nothere not found"));
    assert!(cli.fails(&["network", "rm", "nothere"]).contains("network nothere not found"));
    cli.ok(&["network", "rm", "alpha"]);
    assert!(!cli.conf.join("alpha.conflist").exists());
    assert!(cli.fails(&["network", "inspect", "alpha"]).contains("not found"));
    // Its subnet is free again.
    cli.ok(&["network", "create", "again"]);
    assert_eq!(subnets(&cli.json(&["network", "inspect", "again"])), ["10.90.0.0/24"]);
}

fn add_netns(name: &str) -> String {
    sh(&format!("ip netns add {name} && ip -n {name} link set lo up"));
    format!("/run/netns/{name}")
}

/// The first IPv4 address of a result.
fn address(result: &Value) -> String {
    result["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string()
}

/// Every firewall rule mentioning `text`: iptables' (all tables) and nftables' (the
/// plugins may use either backend).
fn rules_naming(text: &str) -> Vec<String> {
    let rules = sh("iptables-save; ip6tables-save; nft list ruleset");
    rules.lines().filter(|l| l.contains(text)).map(String::from).collect()
}

/// A test host: a namespace joined to this one by a veth, 192.0.2.2 there, 192.0.2.1 here.
fn test_host(name: &str) {
    add_netns(name);
    sh(&format!(
        "ip link add th-{name} type veth peer name eth0 netns {name}
         ip addr add 192.0.2.1/24 dev th-{name} && ip link set th-{name} up
         ip -n {name} addr add 192.0.2.2/24 dev eth0 && ip -n {name} link set eth0 up
         ip -n {name} route add default via 192.0.2.1"
    ));
}

/// busybox httpd in a namespace, serving `text` at /; killed on drop.
struct WebServer(Child);

impl WebServer {
    fn start(netns: &str, text: &str) -> WebServer {
        let dir = format!("/run/www-{netns}");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(format!("{dir}/index.html"), text).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", netns, "busybox", "httpd", "-f", "-p", "80", "-h", &dir])
            .spawn()
            .unwrap();
        WebServer(child)
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn fetch(from_netns: &str, url: &str) -> Option<String> {
    for _ in 0..50 {
        let out = Command::new("ip")
            .args(["netns", "exec", from_netns, "timeout", "5", "busybox", "wget", "-qO-", url])
            .output()
            .unwrap();
        if out.status.success() {
            return Some(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    None
}

#[test]
fn containers_attach_through_the_chain_and_detach_cleanly() {
    if !inside_private_netns("containers_attach_through_the_chain_and_detach_cleanly") {
        return;
    }
    let cli = Cli::new();
    cli.ok(&["network", "create", "web", "--ipv6"]);
    let (c1, c2) = (add_netns("c1"), add_netns("c2"));
    let first: Value = cli.json(&[
        "add",
        "web",
        "--netns",
        &c1,
        "--id",
        "ctr-one",
        "--publish",
        "8080:80",
        "-p",
        "81",
        "--alias",
        "www",
    ]);
    let second: Value = cli.json(&["add", "web", "--netns", &c2, "--id", "ctr-two"]);
    let (a1, a2) = (address(&first), address(&second));
    assert_eq!((a1.as_str(), a2.as_str()), ("10.90.0.2", "10.90.0.3"), "{first}\n{second}");
    assert_eq!(
        first["interfaces"].as_array().unwrap().iter().filter(|i| i["sandbox"] == c1.as_str()).count(),
        1,
        "{first}"
    );
    // Each plugin of the chain ran: the bridge's veth and route, portmap's and firewall's rules.
    assert!(sh("ip -n c1 route").contains("default via 10.90.0.1"));
    assert!(!rules_naming(&a1).is_empty(), "no rule names {a1}:\n{}", sh("nft list ruleset"));
    assert!(succeeds(&format!("ip netns exec c1 busybox ping -c1 -W2 {a2}")));

    // The published port answers a test host, through the namespace's own address.
    test_host("th");
    let _server = WebServer::start("c1", "hello from ctr-one");
    assert_eq!(fetch("th", "http://192.0.2.1:8080/").as_deref(), Some("hello from ctr-one"));

    // `-p 81` got a free high host port; inspect shows both members and their ports.
    let web = cli.json(&["network", "inspect", "web"]);
    let members = web["containers"].as_array().unwrap();
    assert_eq!(members.len(), 2, "{web}");
    assert_eq!((&members[0]["id"], &members[0]["aliases"]), (&json!("ctr-one"), &json!(["www"])));
    let ports = &members[0]["portMappings"];
    assert_eq!((&ports[0]["hostPort"], &ports[0]["containerPort"]), (&json!(8080), &json!(80)), "{web}");
    let chosen = ports[1]["hostPort"].as_u64().unwrap();
    assert!(chosen >= 1024 && chosen != 8080 && ports[1]["containerPort"] == 81, "{web}");

    // CHECK passes on a healthy attachment and refuses one that was never made. (On a
    // member publishing nothing: the reference portmap 1.1.1, the stand-in until berth's
    // is merged, looks for its IPv4 rules in the IPv6 table at CHECK and never passes.)
    cli.ok(&["check", "web", "--netns", &c2, "--id", "ctr-two"]);
    assert!(cli.fails(&["check", "web", "--netns", &c1, "--id", "nobody"]).contains("not attached"));

    // A host port another container publishes is refused, naming it, and leaves nothing.
    let c3 = add_netns("c3");
    let taken = cli.fails(&["add", "web", "--netns", &c3, "--id", "ctr-three", "-p", "8080:81"]);
    assert!(taken.contains("host port 8080/tcp is already published by container ctr-one on network web"), "{taken}");
    assert_eq!(cli.json(&["network", "inspect", "web"])["containers"].as_array().unwrap().len(), 2);
    assert!(!sh("ip -n c3 link").contains("eth0"));

    // A second ADD of the same attachment and rm of a network in use are refused.
    assert!(cli.fails(&["add", "web", "--netns", &c1, "--id", "ctr-one"]).contains("already attached"));
    let in_use = cli.fails(&["network", "rm", "web"]);
    assert!(in_use.contains("has containers attached (ctr-one, ctr-two)"), "{in_use}");

    // DEL with the netns leaves no rule naming the address (the reference firewall plugin
    // finds its rules only through the cached prevResult) or the container.
    cli.ok(&["del", "web", "--netns", &c1, "--id", "ctr-one"]);
    assert_eq!(rules_naming(&a1), Vec::<String>::new());
    assert_eq!(rules_naming("ctr-one"), Vec::<String>::new());
    assert!(fetch("th", "http://192.0.2.1:8080/").is_none(), "the port still answers after DEL");
    cli.ok(&["del", "web", "--netns", &c1, "--id", "ctr-one"]);
    assert!(cli.fails(&["check", "web", "--netns", &c1, "--id", "ctr-one"]).contains("not attached"));

    // DEL once the namespace is gone, then again.
    sh("ip netns del c2");
    cli.ok(&["del", "web", "--netns", &c2, "--id", "ctr-two"]);
    cli.ok(&["del", "web", "--id", "ctr-two"]);
    assert_eq!(rules_naming(&a2), Vec::<String>::new());
    assert_eq!(rules_naming("ctr-two"), Vec::<String>::new());
    assert!(!sh("ip -o link show master berth1").contains("veth"), "{}", sh("ip link"));

    // Nothing is left: addresses freed, no attachment recorded, and rm succeeds.
    let allocations: Vec<String> = std::fs::read_dir(cli.state.join("ipam/web"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("10."))
        .collect();
    assert_eq!(allocations, Vec::<String>::new());
    assert_eq!(cli.json(&["network", "inspect", "web"])["containers"], json!([]));
    let bridge = cli.json(&["network", "inspect", "web"])["bridge"].as_str().unwrap().to_string();
    assert!(succeeds(&format!("ip link show {bridge}")));
    cli.ok(&["network", "rm", "web"]);
    assert!(!succeeds(&format!("ip link show {bridge}")), "network rm left its bridge {bridge}");
    // Deleting from a network that no longer exists succeeds with nothing to do.
    cli.ok(&["del", "web", "--id", "ctr-two"]);
}

#[test]
fn internal_networks_publish_nothing_and_route_nowhere() {
    if !inside_private_netns("internal_networks_publish_nothing_and_route_nowhere") {
        return;
    }
    let cli = Cli::new();
    cli.ok(&["network", "create", "backend", "--internal"]);
    let (n1, n2) = (add_netns("i1"), add_netns("i2"));
    let refused = cli.fails(&["add", "backend", "--netns", &n1, "--id", "i-one", "--publish", "8080:80"]);
    assert!(refused.contains("network backend is internal"), "{refused}");
    let one = cli.json(&["add", "backend", "--netns", &n1, "--id", "i-one"]);
    let two = cli.json(&["add", "backend", "--netns", &n2, "--id", "i-two"]);
    assert!(!sh("ip -n i1 route").contains("default"), "{}", sh("ip -n i1 route"));
    // Members reach each other; nothing is masqueraded.
    assert!(succeeds(&format!("ip netns exec i1 busybox ping -c1 -W2 {}", address(&two))));
    let masquerading: Vec<String> =
        rules_naming(&address(&one)).into_iter().filter(|r| r.to_lowercase().contains("masq")).collect();
    assert_eq!(masquerading, Vec::<String>::new());
    cli.ok(&["del", "backend", "--netns", &n1, "--id", "i-one"]);
    cli.ok(&["del", "backend", "--netns", &n2, "--id", "i-two"]);
    cli.ok(&["network", "rm", "backend"]);
}

/// A stand-in for a container's process: a sleeper in a network namespace of its own,
/// killed on drop. The hook reads its pid from the state, as a runtime gives it.
struct Sleeper(Child);

impl Sleeper {
    fn start() -> Sleeper {
        Sleeper(Command::new("unshare").args(["-n", "--", "sleep", "600"]).spawn().unwrap())
    }

    fn state(&self, id: &str) -> Value {
        // unshare execs sleep in place, so its pid is the sleeper's.
        for _ in 0..100 {
            if std::fs::read_link(format!("/proc/{}/exe", self.0.id())).is_ok_and(|exe| exe.ends_with("sleep")) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        json!({ "ociVersion": "1.1.0", "id": id, "pid": self.0.id(), "status": "creating", "bundle": "/nonexistent" })
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn hosts_file(name: &str) -> PathBuf {
    let path = PathBuf::from(format!("/run/hosts-{name}"));
    std::fs::write(&path, format!("127.0.0.1\tlocalhost\n10.1.1.1\tadded-host # {name}\n")).unwrap();
    path
}

fn block(path: &Path, network: &str) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let begin = lines.iter().position(|l| *l == format!("# berth-cni {network} begin"));
    let end = lines.iter().position(|l| *l == format!("# berth-cni {network} end"));
    match (begin, end) {
        (Some(b), Some(e)) => lines[b + 1..e].iter().map(|l| l.to_string()).collect(),
        _ => Vec::new(),
    }
}

#[test]
fn hooks_attach_from_the_oci_state_and_keep_every_hosts_file() {
    if !inside_private_netns("hooks_attach_from_the_oci_state_and_keep_every_hosts_file") {
        return;
    }
    let cli = Cli::new();
    cli.ok(&["network", "create", "names"]);
    let (one, two, three) = (Sleeper::start(), Sleeper::start(), Sleeper::start());
    let (h1, h2, h3) = (hosts_file("one"), hosts_file("two"), hosts_file("three"));
    let inode = std::fs::metadata(&h1).unwrap().ino();
    let add = |sleeper: &Sleeper, id: &str, extra: &[&str], hosts: &Path| {
        let mut args = vec!["hook", "add", "names", "--hosts-file", hosts.to_str().unwrap()];
        args.extend(extra);
        let out = cli.hook(&args, &sleeper.state(id));
        assert!(out.status.success(), "hook add {id}: {}", String::from_utf8_lossy(&out.stderr));
    };
    add(&one, "id-one", &["--name", "one", "--alias", "first"], &h1);
    assert_eq!(block(&h1, "names"), ["10.90.0.2\tone first"]);
    // Its network namespace is pinned under its name for `--network container:one` bundles.
    let pinned = cli.json(&["container", "inspect", "one"]);
    assert_eq!((pinned["id"].as_str(), pinned["bundle"].as_str()), (Some("id-one"), Some("/nonexistent")));
    let netns_inode = |path: &str| std::fs::metadata(path).unwrap().ino();
    assert_eq!(netns_inode(pinned["netns"].as_str().unwrap()), netns_inode(&format!("/proc/{}/ns/net", one.0.id())));
    // The name is taken while it runs: another container asking for it is refused and not attached.
    let taker = Sleeper::start();
    let out = cli.hook(&["hook", "add", "names", "--name", "one"], &taker.state("id-taker"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("taken by the running container id-one"));
    assert!(!cli.ok(&["network", "inspect", "names"]).contains("id-taker"));
    add(&two, "id-two", &["--name", "two"], &h2);
    add(&three, "id-three", &[], &h3);
    // The interface is in the sleeper's namespace.
    assert!(sh(&format!("nsenter -t {} -n ip -4 addr show eth0", one.0.id())).contains("10.90.0.2/24"));
    // Each file: its own lines first, then every other member; the rest of it untouched.
    // (the others by container id).
    assert_eq!(block(&h1, "names"), ["10.90.0.2\tone first", "10.90.0.4\tid-three", "10.90.0.3\ttwo"]);
    assert_eq!(block(&h2, "names"), ["10.90.0.3\ttwo", "10.90.0.2\tone first", "10.90.0.4\tid-three"]);
    assert_eq!(block(&h3, "names"), ["10.90.0.4\tid-three", "10.90.0.2\tone first", "10.90.0.3\ttwo"]);
    let text = std::fs::read_to_string(&h1).unwrap();
    assert!(text.starts_with("127.0.0.1\tlocalhost\n10.1.1.1\tadded-host # one\n# berth-cni names begin\n"), "{text}");
    assert_eq!(std::fs::metadata(&h1).unwrap().ino(), inode, "the hosts file was replaced, not rewritten in place");

    // poststop: the process is gone; the member leaves every other file, and its own file
    // is back to what the bundle wrote.
    let gone_state = two.state("id-two");
    drop(two);
    let out = cli.hook(&["hook", "del", "names"], &gone_state);
    assert!(out.status.success(), "hook del: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(block(&h1, "names"), ["10.90.0.2\tone first", "10.90.0.4\tid-three"]);
    assert_eq!(block(&h3, "names"), ["10.90.0.4\tid-three", "10.90.0.2\tone first"]);
    assert_eq!(std::fs::read_to_string(&h2).unwrap(), "127.0.0.1\tlocalhost\n10.1.1.1\tadded-host # two\n");
    // Repeated poststop is fine.
    assert!(cli.hook(&["hook", "del", "names"], &gone_state).status.success());

    // The default network lists a member's own names only.
    let four = Sleeper::start();
    let h4 = hosts_file("four");
    let out = cli.hook(
        &["hook", "add", "berth", "--name", "four", "--hosts-file", h4.to_str().unwrap()],
        &four.state("id-four"),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let five = Sleeper::start();
    let h5 = hosts_file("five");
    let out = cli.hook(
        &["hook", "add", "berth", "--name", "five", "--hosts-file", h5.to_str().unwrap()],
        &five.state("id-five"),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let own = block(&h4, "berth");
    assert!(own.len() == 1 && own[0].ends_with("\tfour"), "{own:?}");

    // A hook without a process in its state, or with a name no hosts file can hold, is
    // refused, saying so.
    let out = cli.hook(&["hook", "add", "names", "--alias", "two words"], &four.state("id-six"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid alias \"two words\""));
    let out = cli.hook(&["hook", "add", "names", "--hosts-file", "/run/no-such-hosts"], &four.state("id-six"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("hosts file /run/no-such-hosts does not exist"));
    let out = cli.hook(&["hook", "add", "names"], &json!({ "id": "x", "pid": 0 }));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no process in its state"));

    // A container gone without its poststop hook leaves a stale pin: the name is free again
    // (the pin is removed when asked), and the late poststop still succeeds.
    let ghost = Sleeper::start();
    let ghost_state = ghost.state("id-ghost");
    assert!(cli.hook(&["hook", "add", "berth", "--name", "ghost"], &ghost_state).status.success());
    assert_eq!(cli.json(&["container", "inspect", "ghost"])["id"], "id-ghost");
    drop(ghost);
    assert!(cli.fails(&["container", "inspect", "ghost"]).contains("no running container is named \"ghost\""));
    assert!(cli.hook(&["hook", "del", "berth"], &ghost_state).status.success());

    // A member that filled its own hosts file with bytes that are not text blocks nobody:
    // a newcomer still joins and every other member's file still lists it.
    std::fs::write(&h3, b"\xff\xfe written by the container\n").unwrap();
    let late = Sleeper::start();
    let h_late = hosts_file("late");
    add(&late, "id-late", &["--name", "late"], &h_late);
    assert!(block(&h1, "names").iter().any(|l| l.ends_with("\tlate")), "{:?}", block(&h1, "names"));
    assert!(cli.hook(&["hook", "del", "names"], &late.state("id-late")).status.success());

    for (state, network) in [
        (one.state("id-one"), "names"),
        (three.state("id-three"), "names"),
        (four.state("id-four"), "berth"),
        (five.state("id-five"), "berth"),
    ] {
        assert!(cli.hook(&["hook", "del", network], &state).status.success());
    }
    assert_eq!(block(&h1, "names"), Vec::<String>::new());
    assert_eq!(cli.json(&["network", "inspect", "names"])["containers"], json!([]));
    // poststop unpinned it: nothing is mounted in the state dir any more.
    assert!(cli.fails(&["container", "inspect", "one"]).contains("no running container is named \"one\""));
    assert!(!std::fs::read_to_string("/proc/self/mountinfo").unwrap().contains("/run/berth-cni-test/state/netns"));
    cli.ok(&["network", "rm", "names"]);
}

#[test]
fn parallel_hooks_each_get_an_address_and_every_name() {
    if !inside_private_netns("parallel_hooks_each_get_an_address_and_every_name") {
        return;
    }
    let cli = Cli::new();
    cli.ok(&["network", "create", "crowd"]);
    let members: Vec<(Sleeper, PathBuf, String)> =
        (0..8).map(|n| (Sleeper::start(), hosts_file(&format!("m{n}")), format!("m{n}"))).collect();
    let states: Vec<Value> = members.iter().map(|(s, _, name)| s.state(&format!("id-{name}"))).collect();
    std::thread::scope(|scope| {
        for ((_, hosts, name), state) in members.iter().zip(&states) {
            let cli = &cli;
            scope.spawn(move || {
                let args = ["hook", "add", "crowd", "--name", name, "--hosts-file", hosts.to_str().unwrap()];
                let out = cli.hook(&args, state);
                assert!(out.status.success(), "hook add {name}: {}", String::from_utf8_lossy(&out.stderr));
            });
        }
    });
    let mut addresses: Vec<String> = Vec::new();
    for (_, hosts, name) in &members {
        let lines = block(hosts, "crowd");
        assert_eq!(lines.len(), 8, "{name}: {lines:?}");
        assert!(lines[0].ends_with(&format!("\t{name}")), "{name}'s own line comes first: {lines:?}");
        addresses.push(lines[0].split('\t').next().unwrap().to_string());
    }
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 8, "{addresses:?}");
    std::thread::scope(|scope| {
        for state in &states {
            let cli = &cli;
            scope.spawn(move || assert!(cli.hook(&["hook", "del", "crowd"], state).status.success()));
        }
    });
    for (_, hosts, name) in &members {
        assert_eq!(block(hosts, "crowd"), Vec::<String>::new(), "{name}");
    }
    cli.ok(&["network", "rm", "crowd"]);
}

#[test]
fn a_failed_add_is_undone_through_the_plugins_already_run() {
    if !inside_private_netns("a_failed_add_is_undone_through_the_plugins_already_run") {
        return;
    }
    let cli = Cli::new();
    cli.ok(&["network", "create", "broken"]);
    // A chain whose last plugin is not installed: bridge, portmap, firewall and tuning
    // have run when it fails.
    let mut conflist = cli.conflist("broken");
    conflist["plugins"].as_array_mut().unwrap().push(json!({ "type": "not-installed" }));
    std::fs::write(cli.conf.join("broken.conflist"), conflist.to_string()).unwrap();
    let netns = add_netns("f1");
    let e = cli.fails(&["add", "broken", "--netns", &netns, "--id", "ctr-failed", "-p", "8080:80"]);
    assert!(e.contains("plugin not-installed is not in"), "{e}");
    assert!(!sh("ip -n f1 link").contains("eth0"), "{}", sh("ip -n f1 link"));
    assert!(!sh("ip -o link").contains("veth"), "{}", sh("ip -o link"));
    assert_eq!(rules_naming("10.90.0.2"), Vec::<String>::new());
    assert_eq!(rules_naming("ctr-failed"), Vec::<String>::new());
    let left = sh(&format!("ls {}/ipam/broken | grep -c '^10\\.' || true", cli.state.display()));
    assert_eq!(left.trim(), "0");
    assert_eq!(cli.json(&["network", "inspect", "broken"])["containers"], json!([]));
    cli.ok(&["network", "rm", "broken"]);
}

/// The plugin configs a recording plugin got, as (command, tag, config) in call order.
fn recorded(log: &Path) -> Vec<(String, String, Value)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let (command, conf) = line.split_once(' ').unwrap();
            let conf: Value = serde_json::from_str(conf).unwrap();
            (command.to_string(), conf["tag"].as_str().unwrap().to_string(), conf)
        })
        .collect()
}

#[test]
fn the_chain_passes_results_and_runtime_config_as_libcni_does() {
    if !inside_private_netns("the_chain_passes_results_and_runtime_config_as_libcni_does") {
        return;
    }
    let cli = Cli::new();
    // A plugin that logs the config it gets and answers its prevResult.
    let log = Path::new("/run/recorded");
    let script = format!(
        "#!/bin/sh\nconf=$(cat)\necho \"$CNI_COMMAND $(printf '%s' \"$conf\" | jq -c .)\" >> {}\n\
         [ \"$CNI_COMMAND\" = ADD ] && printf '%s' \"$conf\" | jq -c .prevResult\nexit 0\n",
        log.display()
    );
    std::fs::write(cli.bin.join("record"), script).unwrap();
    sh(&format!("chmod 755 {}", cli.bin.join("record").display()));
    cli.ok(&["network", "create", "traced"]);
    let mut conflist = cli.conflist("traced");
    let bridge = conflist["plugins"][0].clone();
    conflist["plugins"] = json!([
        bridge,
        { "type": "record", "tag": "ports", "capabilities": { "portMappings": true } },
        { "type": "record", "tag": "plain", "capabilities": { "portMappings": false } }
    ]);
    std::fs::write(cli.conf.join("traced.conflist"), conflist.to_string()).unwrap();
    let netns = add_netns("t1");

    let result = cli.json(&["add", "traced", "--netns", &netns, "--id", "ctr-traced", "-p", "8080:80/udp"]);
    assert_eq!(address(&result), "10.90.0.2");
    let calls = recorded(log);
    let tags: Vec<(&str, &str)> = calls.iter().map(|(c, t, _)| (c.as_str(), t.as_str())).collect();
    assert_eq!(tags, [("ADD", "ports"), ("ADD", "plain")]);
    let (ports, plain) = (&calls[0].2, &calls[1].2);
    // Each plugin gets the network's name and version, and the previous plugin's result.
    assert_eq!((&ports["name"], &ports["cniVersion"]), (&json!("traced"), &conflist["cniVersion"]));
    assert_eq!(ports["prevResult"], result);
    assert_eq!(plain["prevResult"], result);
    // runtimeConfig only where the capability is declared.
    assert_eq!(
        ports["runtimeConfig"],
        json!({ "portMappings": [{ "hostPort": 8080, "containerPort": 80, "protocol": "udp" }] })
    );
    assert_eq!(plain.get("runtimeConfig"), None);

    // CHECK in order, DEL in reverse, both with the cached result.
    std::fs::remove_file(log).unwrap();
    cli.ok(&["check", "traced", "--netns", &netns, "--id", "ctr-traced"]);
    cli.ok(&["del", "traced", "--netns", &netns, "--id", "ctr-traced"]);
    let calls = recorded(log);
    let tags: Vec<(&str, &str)> = calls.iter().map(|(c, t, _)| (c.as_str(), t.as_str())).collect();
    assert_eq!(tags, [("CHECK", "ports"), ("CHECK", "plain"), ("DEL", "plain"), ("DEL", "ports")]);
    assert!(calls.iter().all(|(_, _, conf)| conf["prevResult"] == result), "{calls:?}");
    assert_eq!(calls[3].2["runtimeConfig"]["portMappings"][0]["hostPort"], json!(8080));

    // A repeated DEL has no cached result left: no prevResult, and it still succeeds.
    std::fs::remove_file(log).unwrap();
    cli.ok(&["del", "traced", "--netns", &netns, "--id", "ctr-traced"]);
    let calls = recorded(log);
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().all(|(command, _, conf)| command == "DEL" && conf.get("prevResult").is_none()), "{calls:?}");
    cli.ok(&["network", "rm", "traced"]);
}

#[test]
fn the_default_bin_dir_is_the_lib_cni_installed_next_to_the_binary() {
    if !inside_private_netns("the_default_bin_dir_is_the_lib_cni_installed_next_to_the_binary") {
        return;
    }
    // `make install`'s layout: bin/berth-cni and lib/cni/<plugin>.
    let prefix = Path::new("/run/prefix");
    std::fs::create_dir_all(prefix.join("bin")).unwrap();
    let installed = prefix.join("bin/berth-cni");
    std::fs::copy(env!("CARGO_BIN_EXE_berth-cni"), &installed).unwrap();
    let run = |args: &[&str]| {
        Command::new(&installed)
            .args(args)
            .args(["--conf-dir", "/run/prefix/net.d", "--state-dir", "/run/prefix/state"])
            .output()
            .unwrap()
    };
    assert!(run(&["network", "create", "installed"]).status.success());
    let netns = add_netns("p1");
    let missing = run(&["add", "installed", "--netns", &netns, "--id", "ctr-p"]);
    let e = String::from_utf8_lossy(&missing.stderr);
    assert!(e.contains("plugin bridge is not in /run/prefix/bin/../lib/cni (give --bin-dir)"), "{e}");
    plugin_dir::fill(&prefix.join("lib/cni"), &installed);
    let added = run(&["add", "installed", "--netns", &netns, "--id", "ctr-p"]);
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    assert!(sh("ip -n p1 -4 addr show eth0").contains("10.90.0.2/24"));
    assert!(run(&["del", "installed", "--netns", &netns, "--id", "ctr-p"]).status.success());
    assert!(run(&["network", "rm", "installed"]).status.success());
}
