//! `berth-image unpack`'s network options end to end, as a Docker user runs them, all inside
//! a private network namespace the test makes (`unshare -n -m`): bundles on a network made
//! by `berth-cni network create` reach each other by name and alias in both directions, a
//! published port (`-p`) and the image's exposed ports (`-P`) answer a test host, `--link`
//! names a running container, `container:NAME` shares that container's network, hostname
//! and hosts, `none` has only a loopback and `host` shares the host's (here: the test's
//! private) network; options a mode cannot take are refused and leave nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_tests::bins::bin;
use berth_tests::cni_dirs::CniDirs;
use berth_tests::fixtures::container_id;
use berth_tests::image_store::ImageStore;
use berth_tests::oci_image::{LayerDir, OciArchive};
use berth_tests::plugin_dir;
use berth_tests::private_namespaces;
use berth_tests::privilege::require_root;
use berth_tests::runtime::Berth;
use serde_json::{json, Value};

const INSIDE: &str = "BERTH_UNPACK_NETWORKS_INSIDE";
const TEST: &str = "unpacked_bundles_publish_resolve_and_share_networks_as_docker_does";
const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[test]
fn unpacked_bundles_publish_resolve_and_share_networks_as_docker_does() {
    if std::env::var_os(INSIDE).is_none() && !require_root(TEST) {
        return;
    }
    private_namespaces::run(TEST, INSIDE, "berth-unpack-networks", None, run_inside);
}

fn sh(script: &str) -> String {
    let out = Command::new("sh").arg("-ec").arg(script).output().unwrap();
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Unpacks bundle `name` with `args` plus berth-cni's directories; its path.
fn unpack(store: &ImageStore, image: &str, dirs: &CniDirs, name: &str, args: &[&str]) -> PathBuf {
    let (options, command) = match args.iter().position(|a| *a == "--") {
        Some(split) => (&args[..split], &args[split..]),
        None => (args, &[][..]),
    };
    let mut all: Vec<String> = options.iter().map(|a| a.to_string()).collect();
    all.extend(dirs.unpack_flags());
    all.extend(command.iter().map(|a| a.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    store.unpack(image, name, &all, &[])
}

/// `wget -qO- URL` in the container, retried while its server comes up.
fn wget(berth: &Berth, id: &str, url: &str) -> String {
    let mut last = String::new();
    for _ in 0..50 {
        let out = berth.output(&["exec", id, "timeout", "5", "wget", "-qO-", url]);
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("wget {url} in {id} failed: {last}");
}

/// The test host's view of `url` (192.0.2.1 is this namespace's address towards it).
fn from_test_host(url: &str) -> String {
    sh(&format!("ip netns exec th timeout 5 busybox wget -qO- {url}"))
}

/// Runs the bundle in the foreground; its stdout (exit 0 asserted).
fn run(berth: &Berth, bundle: &Path, name: &str) -> String {
    let (code, stdout, stderr) = berth.run_bundle(bundle, &container_id(name));
    assert_eq!(code, 0, "{name} failed: {stdout}{stderr}");
    stdout
}

fn stop_and_delete(berth: &Berth, id: &str) {
    berth.ok(&["kill", id, "KILL"]);
    berth.wait_status(id, "stopped");
    berth.ok(&["delete", id]);
}

fn run_inside(dir: &Path) {
    private_namespaces::make_run_and_var_lib_private();
    let dirs = CniDirs::under(dir);
    plugin_dir::fill(&dirs.bin, &bin("berth-cni"));
    dirs.ok(&["network", "create", "web"]);
    sh("ip netns add th && ip link add th0 type veth peer name eth0 netns th
        ip addr add 192.0.2.1/24 dev th0 && ip link set th0 up
        ip -n th addr add 192.0.2.2/24 dev eth0 && ip -n th link set eth0 up && ip -n th link set lo up");

    // A web image: it serves its hostname on the port it exposes.
    let store = ImageStore::new("unpack-networks");
    let serve = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www";
    let config = json!({"Env": [PATH], "Cmd": ["sh", "-c", serve], "ExposedPorts": {"80/tcp": {}}});
    let image = store.import(&OciArchive::build_with_config("berth.test/web:1", &[LayerDir::busybox()], config));
    let berth = Berth::new("unpack-networks");
    let on_web = ["--network", "web", "--cap-add", "NET_RAW"];

    let api = unpack(
        &store,
        &image,
        &dirs,
        "api",
        &[&on_web[..], &["--hostname", "api", "-p", "8080:80", "--alias", "backend"]].concat(),
    );
    let client = unpack(&store, &image, &dirs, "client", &[&on_web[..], &["--hostname", "client", "-P"]].concat());
    let (api_id, client_id) = (container_id("api"), container_id("client"));
    berth.ok(&["run", "-d", "-b", api.to_str().unwrap(), &api_id]);
    berth.ok(&["run", "-d", "-b", client.to_str().unwrap(), &client_id]);

    // Names and aliases both ways; the published port and the -P port answer the test host.
    assert_eq!(wget(&berth, &client_id, "http://api/"), "api\n");
    assert_eq!(wget(&berth, &client_id, "http://backend/"), "api\n");
    assert_eq!(wget(&berth, &api_id, "http://client/"), "client\n");
    let ping = berth.output(&["exec", &api_id, "ping", "-c1", "-W2", "client"]);
    assert!(ping.status.success(), "{}", String::from_utf8_lossy(&ping.stderr));
    assert_eq!(from_test_host("http://192.0.2.1:8080/"), "api\n");
    // From the host itself on 127.0.0.1, and from api through the host's address (hairpin).
    assert_eq!(sh("timeout 5 busybox wget -qO- http://127.0.0.1:8080/"), "api\n");
    assert_eq!(wget(&berth, &api_id, "http://192.0.2.1:8080/"), "api\n");
    let web = dirs.json(&["network", "inspect", "web"]);
    let members = web["containers"].as_array().unwrap();
    let client_member = members.iter().find(|m| m["name"] == "client").expect("client is not on web");
    let host_port = client_member["portMappings"][0]["hostPort"].as_u64().expect("-P published nothing");
    assert_eq!(client_member["portMappings"][0]["containerPort"], 80);
    assert_eq!(from_test_host(&format!("http://192.0.2.1:{host_port}/")), "client\n");

    // --link: the running api under another name, in a foreground run's hosts file.
    let linker = unpack(
        &store,
        &image,
        &dirs,
        "linker",
        &[&on_web[..], &["--link", "api:db", "--", "wget", "-qO-", "http://db/"]].concat(),
    );
    assert_eq!(run(&berth, &linker, "linker"), "api\n");
    let linker_hosts = std::fs::read_to_string(linker.join("hosts")).unwrap();
    assert!(linker_hosts.contains("\tdb\n") && linker_hosts.contains("\tapi\n"), "{linker_hosts}");

    // container:api shares api's network (its server on 127.0.0.1), hostname and hosts.
    let sidecar = unpack(
        &store,
        &image,
        &dirs,
        "sidecar",
        &[
            "--network",
            "container:api",
            "--",
            "sh",
            "-c",
            "hostname; wget -qO- http://127.0.0.1/; grep -c backend /etc/hosts",
        ],
    );
    assert_eq!(run(&berth, &sidecar, "sidecar"), "api\napi\n1\n");
    let config: Value = serde_json::from_slice(&std::fs::read(sidecar.join("config.json")).unwrap()).unwrap();
    let pinned = dirs.json(&["container", "inspect", "api"]);
    let network_ns = config["linux"]["namespaces"].as_array().unwrap().iter().find(|n| n["type"] == "network").cloned();
    assert_eq!(network_ns.unwrap()["path"], pinned["netns"]);
    for (args, says) in [
        (vec!["--network", "container:api", "-p", "80"], "-p/--publish"),
        (vec!["--network", "container:api", "--hostname", "x"], "drop --hostname"),
        (vec!["--network", "container:nobody"], "no running container is named \"nobody\""),
        (vec!["--network", "none", "--link", "api"], "--link need a bridge or named network"),
        (vec!["--network", "web", "-p", "8081:99999"], "\"99999\" is not a port"),
        (vec!["--network", "web", "--name", "api"], "the name \"api\" is already used by the running container"),
    ] {
        let bundle = store.bundle_path("refused");
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend(dirs.unpack_flags());
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let out = store.unpack_output(&image, &bundle, &all, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(says), "{args:?}: {stderr}");
        assert!(!bundle.exists(), "a refused unpack left {}", bundle.display());
    }

    // none: only a loopback, up; host: the host's interfaces (this test's th0).
    let none = unpack(
        &store,
        &image,
        &dirs,
        "none",
        &["--network", "none", "--", "sh", "-c", "ls /sys/class/net; cat /sys/class/net/lo/operstate"],
    );
    assert_eq!(run(&berth, &none, "none"), "lo\nunknown\n");
    let host = unpack(&store, &image, &dirs, "host", &["--network", "host", "--", "ls", "/sys/class/net"]);
    assert!(run(&berth, &host, "host").lines().any(|l| l == "th0"));

    // Deleting both leaves the network empty and unpins api.
    stop_and_delete(&berth, &client_id);
    stop_and_delete(&berth, &api_id);
    // The joiner's create fails once its target is gone, naming the namespace it wanted.
    let (code, _, stderr) = berth.run_bundle(&sidecar, &container_id("sidecar-late"));
    assert!(code != 0 && stderr.contains("netns/api"), "the joiner ran without its target: {stderr}");
    assert_eq!(dirs.json(&["network", "inspect", "web"])["containers"], json!([]));
    assert!(!dirs.output(&["container", "inspect", "api"]).status.success());
    assert!(!std::fs::read_to_string("/proc/self/mountinfo").unwrap().contains(dirs.state.to_str().unwrap()));
}
