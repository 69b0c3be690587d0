//! host-local and the CNI protocol: every config key, each result version's format, the
//! error codes, VERSION/CHECK/GC/STATUS, idempotent DEL, concurrency, and differential
//! runs against Debian's reference host-local on the same store and on configs with keys
//! of the wrong type or unknown keys.

use berth_cni::exec::run_plugin;
use berth_cni::skel::Args;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

const REFERENCE: &str = "/usr/lib/cni/host-local";

struct Temp(PathBuf);

impl Temp {
    fn new() -> Temp {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "berth-cni-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Temp(dir)
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// berth-cni linked as `host-local` in a directory of the test's own.
fn berth(t: &Temp) -> PathBuf {
    let dir = t.0.join("bin");
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("host-local");
    if !link.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_berth-cni"), &link).unwrap();
    }
    link
}

/// Runs a plugin as a runtime does; returns its exit code and what it printed.
fn call(plugin: &Path, command: &str, id: &str, ifname: &str, conf: &Value) -> (i32, Value) {
    let args = Args {
        command: command.into(),
        container_id: id.into(),
        netns: "/var/run/netns/unused".into(),
        ifname: ifname.into(),
        args: Vec::new(),
        path: vec!["/usr/lib/cni".into()],
    };
    run_plugin(plugin, &args, conf).unwrap()
}

fn conf(version: &str, data_dir: &Path, ipam: Value) -> Value {
    let mut ipam = ipam;
    ipam["type"] = "host-local".into();
    ipam["dataDir"] = data_dir.display().to_string().into();
    json!({ "cniVersion": version, "name": "testnet", "ipam": ipam })
}

fn dual_stack() -> Value {
    json!({ "ranges": [[{ "subnet": "10.22.0.0/16" }], [{ "subnet": "fd00:22::/64" }]], "routes": [{ "dst": "0.0.0.0/0" }, { "dst": "::/0", "gw": "fd00:22::1" }] })
}

fn addresses(result: &Value) -> Vec<String> {
    result["ips"].as_array().unwrap().iter().map(|ip| ip["address"].as_str().unwrap().to_string()).collect()
}

#[test]
fn results_take_each_versions_format() {
    let t = Temp::new();
    let plugin = berth(&t);
    for (n, version) in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"].iter().enumerate() {
        let (code, result) =
            call(&plugin, "ADD", &format!("c{n}"), "eth0", &conf(version, &t.0.join(version), dual_stack()));
        assert_eq!(code, 0, "{result}");
        assert_eq!(result["cniVersion"], *version);
        let legacy = version.starts_with("0.");
        let families: Vec<Value> = result["ips"].as_array().unwrap().iter().map(|ip| ip["version"].clone()).collect();
        assert_eq!(
            families,
            if legacy { vec![json!("4"), json!("6")] } else { vec![Value::Null, Value::Null] },
            "{result}"
        );
        assert_eq!(addresses(&result), ["10.22.0.2/16", "fd00:22::2/64"]);
        assert_eq!(result["ips"][0]["gateway"], "10.22.0.1");
        assert_eq!(result["routes"], json!([{ "dst": "0.0.0.0/0" }, { "dst": "::/0", "gw": "fd00:22::1" }]));
    }
}

#[test]
fn range_keys_gateway_dns_and_the_old_subnet_form() {
    let t = Temp::new();
    let plugin = berth(&t);
    let resolv = t.0.join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 10.0.0.53\nnameserver 10.0.0.54\ndomain example.test\nsearch a.test b.test\noptions ndots:2\n",
    )
    .unwrap();
    let ipam = json!({
        "ranges": [[{ "subnet": "10.30.0.0/24", "rangeStart": "10.30.0.100", "rangeEnd": "10.30.0.101", "gateway": "10.30.0.100" },
                    { "subnet": "10.31.0.0/24", "rangeStart": "10.31.0.5", "rangeEnd": "10.31.0.5" }]],
        "resolvConf": resolv.display().to_string()
    });
    let c = conf("1.0.0", &t.0.join("data"), ipam);
    // The gateway inside the range is skipped; the set's next range is used when one fills.
    let (_, first) = call(&plugin, "ADD", "a", "eth0", &c);
    assert_eq!(addresses(&first), ["10.30.0.101/24"]);
    assert_eq!(first["ips"][0]["gateway"], "10.30.0.100");
    assert_eq!(
        first["dns"],
        json!({ "nameservers": ["10.0.0.53", "10.0.0.54"], "domain": "example.test", "search": ["a.test", "b.test"], "options": ["ndots:2"] })
    );
    let (_, second) = call(&plugin, "ADD", "b", "eth0", &c);
    assert_eq!(addresses(&second), ["10.31.0.5/24"]);
    assert_eq!(second["ips"][0]["gateway"], "10.31.0.1");
    // Full: a clear error, and the failed ADD reserves nothing.
    let (code, error) = call(&plugin, "ADD", "c", "eth0", &c);
    assert_eq!(code, 1);
    assert_eq!(error["code"], 100, "{error}");
    assert!(error["msg"].as_str().unwrap().contains("no IP addresses available"), "{error}");
    let files = std::fs::read_dir(t.0.join("data/testnet"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_str().unwrap().parse::<std::net::IpAddr>().is_ok())
        .count();
    assert_eq!(files, 2);
    // STATUS says the network has no address left; after a DEL it is available again.
    let status = |c: &Value| {
        call(&plugin, "STATUS", "", "", &{
            let mut c = c.clone();
            c["cniVersion"] = "1.1.0".into();
            c
        })
    };
    assert_eq!(status(&c).1["code"], 50);
    assert_eq!(call(&plugin, "DEL", "a", "eth0", &c).0, 0);
    assert_eq!(status(&c).0, 0);
    // The older single-range form.
    let old = conf(
        "0.4.0",
        &t.0.join("old"),
        json!({ "subnet": "192.168.7.0/24", "rangeStart": "192.168.7.50", "gateway": "192.168.7.254" }),
    );
    let (_, result) = call(&plugin, "ADD", "x", "eth0", &old);
    assert_eq!(addresses(&result), ["192.168.7.50/24"]);
    assert_eq!(result["ips"][0]["gateway"], "192.168.7.254");
}

#[test]
fn errors_carry_the_specs_codes() {
    let t = Temp::new();
    let plugin = berth(&t);
    let c = conf("1.0.0", &t.0.join("data"), dual_stack());
    let (code, version) = call(&plugin, "VERSION", "", "", &json!({ "cniVersion": "1.1.0" }));
    assert_eq!(code, 0);
    assert_eq!(version["supportedVersions"], json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]));
    let mut old = c.clone();
    old["cniVersion"] = "0.2.0".into();
    assert_eq!(call(&plugin, "ADD", "a", "eth0", &old).1["code"], 1);
    let mut no_check = c.clone();
    no_check["cniVersion"] = "0.3.1".into();
    assert_eq!(call(&plugin, "CHECK", "a", "eth0", &no_check).1["code"], 1);
    assert_eq!(call(&plugin, "GC", "", "", &c).1["code"], 1, "GC needs a 1.1.0 config");
    assert_eq!(call(&plugin, "ADD", "", "eth0", &c).1["code"], 4);
    assert_eq!(
        call(
            &plugin,
            "ADD",
            "a",
            "eth0",
            &json!({ "cniVersion": "1.0.0", "name": "n", "ipam": { "type": "host-local" } })
        )
        .1["code"],
        7
    );
    let (code, error) = call(
        &plugin,
        "ADD",
        "a",
        "eth0",
        &conf(
            "1.0.0",
            &t.0.join("data"),
            json!({ "ranges": [[{ "subnet": "10.0.0.0/24", "rangeStart": "10.0.1.1" }]] }),
        ),
    );
    assert_eq!((code, error["code"].clone()), (1, json!(7)), "{error}");
    // Not JSON at all.
    let mut child = Command::new(&plugin)
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "a")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_NETNS", "/x")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"{not json").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap()["code"], 6);
    // The same attachment twice is refused, as by the reference plugin.
    assert_eq!(call(&plugin, "ADD", "a", "eth0", &c).0, 0);
    let (code, error) = call(&plugin, "ADD", "a", "eth0", &c);
    assert_eq!(code, 1);
    assert!(error["msg"].as_str().unwrap().contains("duplicate allocation is not allowed"), "{error}");
}

#[test]
fn del_is_idempotent_check_and_gc_follow_the_store() {
    let t = Temp::new();
    let plugin = berth(&t);
    let c = conf("1.1.0", &t.0.join("data"), dual_stack());
    for id in ["keep", "drop", "old"] {
        assert_eq!(call(&plugin, "ADD", id, "eth0", &c).0, 0);
    }
    assert_eq!(call(&plugin, "CHECK", "keep", "eth0", &c).0, 0);
    assert_eq!(call(&plugin, "DEL", "drop", "eth0", &c).0, 0);
    assert_eq!(call(&plugin, "DEL", "drop", "eth0", &c).0, 0, "a repeated DEL succeeds");
    assert_eq!(call(&plugin, "DEL", "never-added", "eth0", &c).0, 0);
    assert_eq!(call(&plugin, "CHECK", "drop", "eth0", &c).1["code"], 3);
    // GC keeps only the valid attachments (the pre-release key is read as well).
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([{ "containerID": "keep", "ifname": "eth0" }]);
    assert_eq!(call(&plugin, "GC", "", "", &gc).0, 0);
    assert_eq!(call(&plugin, "CHECK", "old", "eth0", &c).1["code"], 3);
    assert_eq!(call(&plugin, "CHECK", "keep", "eth0", &c).0, 0);
    let mut gc_old = c.clone();
    gc_old["cni.dev/attachments"] = json!([]);
    assert_eq!(call(&plugin, "GC", "", "", &gc_old).0, 0);
    assert_eq!(call(&plugin, "CHECK", "keep", "eth0", &c).1["code"], 3);
}

#[test]
fn concurrent_adds_get_distinct_addresses_and_dels_free_them_all() {
    let t = Temp::new();
    let plugin = berth(&t);
    let c = conf("1.0.0", &t.0.join("data"), json!({ "ranges": [[{ "subnet": "10.40.0.0/24" }]] }));
    let results: Vec<Value> = std::thread::scope(|scope| {
        let jobs: Vec<_> = (0..50)
            .map(|n| {
                let (plugin, c) = (&plugin, &c);
                scope.spawn(move || call(plugin, "ADD", &format!("c{n}"), "eth0", c))
            })
            .collect();
        jobs.into_iter()
            .map(|j| {
                let (code, result) = j.join().unwrap();
                assert_eq!(code, 0, "{result}");
                result
            })
            .collect()
    });
    let mut all: Vec<String> = results.iter().flat_map(addresses).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 50);
    std::thread::scope(|scope| {
        for n in 0..50 {
            let (plugin, c) = (&plugin, &c);
            scope.spawn(move || assert_eq!(call(plugin, "DEL", &format!("c{n}"), "eth0", c).0, 0));
        }
    });
    let left: Vec<String> = std::fs::read_dir(t.0.join("data/testnet"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

fn reference_ready(test: &str) -> bool {
    let found = Path::new(REFERENCE).exists();
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test} needs Debian's containernetworking-plugins; `make deps` installs it"
        );
        eprintln!("skipping {test}: {REFERENCE} is missing");
    }
    found
}

#[test]
fn same_results_as_the_reference_plugin() {
    if !reference_ready("same_results_as_the_reference_plugin") {
        return;
    }
    let t = Temp::new();
    let plugin = berth(&t);
    for version in ["0.4.0", "1.0.0"] {
        let ipams = [
            dual_stack(),
            json!({ "ranges": [[{ "subnet": "10.50.0.0/24", "rangeStart": "10.50.0.10", "rangeEnd": "10.50.0.20", "gateway": "10.50.0.11" }]], "routes": [{ "dst": "10.60.0.0/16", "gw": "10.50.0.1" }] }),
        ];
        for (n, ipam) in ipams.iter().enumerate() {
            let ours = conf(version, &t.0.join(format!("ours-{version}-{n}")), ipam.clone());
            let theirs = conf(version, &t.0.join(format!("theirs-{version}-{n}")), ipam.clone());
            for id in ["a", "b", "c"] {
                let (code, ours_result) = call(&plugin, "ADD", id, "eth0", &ours);
                let (their_code, their_result) = call(Path::new(REFERENCE), "ADD", id, "eth0", &theirs);
                assert_eq!((code, &ours_result), (their_code, &their_result), "{version} ADD {id}");
            }
            call(&plugin, "DEL", "b", "eth0", &ours);
            call(Path::new(REFERENCE), "DEL", "b", "eth0", &theirs);
            let (_, ours_result) = call(&plugin, "ADD", "d", "eth0", &ours);
            let (_, their_result) = call(Path::new(REFERENCE), "ADD", "d", "eth0", &theirs);
            assert_eq!(ours_result, their_result, "{version}: allocation after a DEL");
        }
    }
}

#[test]
fn a_store_is_shared_with_the_reference_plugin() {
    if !reference_ready("a_store_is_shared_with_the_reference_plugin") {
        return;
    }
    let t = Temp::new();
    let plugin = berth(&t);
    let reference = Path::new(REFERENCE);
    let c = conf("1.0.0", &t.0.join("data"), json!({ "ranges": [[{ "subnet": "10.70.0.0/24" }]] }));
    // berth allocates, the reference continues after it and sees berth's attachment.
    assert_eq!(addresses(&call(&plugin, "ADD", "berth-1", "eth0", &c).1), ["10.70.0.2/24"]);
    assert_eq!(addresses(&call(reference, "ADD", "ref-1", "eth0", &c).1), ["10.70.0.3/24"]);
    assert!(call(reference, "ADD", "berth-1", "eth0", &c).1["msg"].as_str().unwrap().contains("duplicate allocation"));
    // berth sees the reference's allocation (its index rescans after a foreign write).
    let (code, error) = call(&plugin, "ADD", "ref-1", "eth0", &c);
    assert_eq!(code, 1);
    assert!(error["msg"].as_str().unwrap().contains("10.70.0.3 has been allocated to ref-1"), "{error}");
    assert_eq!(addresses(&call(&plugin, "ADD", "berth-2", "eth0", &c).1), ["10.70.0.4/24"]);
    // Each frees the other's allocations.
    assert_eq!(call(&plugin, "DEL", "ref-1", "eth0", &c).0, 0);
    assert_eq!(call(reference, "DEL", "berth-2", "eth0", &c).0, 0);
    assert_eq!(call(&plugin, "CHECK", "berth-2", "eth0", &c).1["code"], 3);
    let held: Vec<String> = std::fs::read_dir(t.0.join("data/testnet"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
        .collect();
    assert_eq!(held, ["10.70.0.2"]);
}

#[test]
fn wrong_types_are_refused_and_unknown_keys_ignored_as_by_the_reference() {
    if !reference_ready("wrong_types_are_refused_and_unknown_keys_ignored_as_by_the_reference") {
        return;
    }
    let t = Temp::new();
    let plugin = berth(&t);
    let reference = Path::new(REFERENCE);
    // A subnet that is a number: berth refuses it as an invalid config naming the key; the
    // reference refuses it too (with its catch-all code).
    let wrong = conf("1.0.0", &t.0.join("wrong"), json!({ "ranges": [[{ "subnet": 167772160 }]] }));
    let (code, error) = call(&plugin, "ADD", "w", "eth0", &wrong);
    assert_eq!((code, error["code"].clone()), (1, json!(7)), "{error}");
    assert!(error["msg"].as_str().unwrap().contains("\"ipam.ranges[0][0].subnet\": invalid type: integer"), "{error}");
    let (their_code, their_error) = call(reference, "ADD", "w", "eth0", &wrong);
    assert_eq!(their_code, 1, "{their_error}");
    assert!(their_error["msg"].as_str().unwrap().contains("subnet"), "{their_error}");
    assert!(!t.0.join("wrong").exists(), "a refused config opened a store");
    // Keys neither knows, at the top, in ipam and in a range: ignored, the same result.
    let unknown = |dir: &str| {
        let mut c = conf(
            "1.0.0",
            &t.0.join(dir),
            json!({ "ranges": [[{ "subnet": "10.80.0.0/24", "someday": [1] }]], "someday": { "x": true } }),
        );
        c["someday"] = json!(1.5);
        c
    };
    let (code, ours) = call(&plugin, "ADD", "u", "eth0", &unknown("ours"));
    let (their_code, theirs) = call(reference, "ADD", "u", "eth0", &unknown("theirs"));
    assert_eq!((code, &ours), (their_code, &theirs));
    assert_eq!(addresses(&ours), ["10.80.0.2/24"]);
}
