//! `make bench` cni section, run inside a private network namespace (the bench re-runs
//! itself under `unshare -n -m`): bridge+host-local ADD and DEL with ipMasq back to back
//! (no gap between calls), and at 1, 50 and 500 existing attachments (DEL with the ADD's result as prevResult), berth against
//! Debian's reference plugins, alternated, with a berth network that keeps one attachment
//! timed in the same rounds; the floors (a process start, the kernel's veth and nf_tables
//! work) measured beside them at each level; binary sizes; portmap ADD and DEL against the
//! reference portmap (berth's default nftables backend and its iptables one), and berth's ADD
//! of 1000 published ports against one; then the default chain (bench_cni_chain).

use berth_cni::exec::run_plugin;
use berth_cni::netlink::route::RouteClient;
use berth_cni::skel::Args;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::bench::{median, ms, ratio, Table};

const REFERENCE_DIR: &str = "/usr/lib/cni";
const ROUNDS: usize = 31;
/// Untimed ADD/DEL pairs per plugin set before the first level, as a benchmark's warm-up.
const WARMUP: usize = 5;
const LEVELS: [usize; 3] = [1, 50, 500];
const INSIDE: &str = "BERTH_BENCH_PRIVATE_NETNS";
const SETTLE: Duration = Duration::from_secs(15);
const QUIET: Duration = Duration::from_millis(50);

fn sh(script: &str) {
    let out = Command::new("sh").arg("-ec").arg(script).output().expect("cannot run sh");
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
}

/// One plugin set: a CNI bin directory and its network.
struct Set {
    label: &'static str,
    bin: PathBuf,
    conf: String,
}

impl Set {
    fn new(label: &'static str, berth: bool, index: usize) -> Set {
        let bin = PathBuf::from(format!("/run/bench-{label}"));
        std::fs::create_dir_all(&bin).unwrap();
        for kind in ["bridge", "host-local"] {
            let target = if berth { crate::bins::bin("berth-cni") } else { Path::new(REFERENCE_DIR).join(kind) };
            std::os::unix::fs::symlink(target, bin.join(kind)).unwrap();
        }
        let conf = serde_json::json!({
            "cniVersion": "1.0.0", "name": format!("bench-{label}"), "type": "bridge", "bridge": format!("br-{label}"),
            "isGateway": true, "ipMasq": true,
            "ipam": { "type": "host-local", "dataDir": format!("/run/ipam-{label}"), "ranges": [[{ "subnet": format!("10.{}.0.0/16", 100 + index) }]] }
        })
        .to_string();
        Set { label, bin, conf }
    }

    /// Runs `command` for container `id` (DEL with `prev` as prevResult, as runtimes send
    /// it); returns the time taken and what the plugin printed.
    fn call(&self, command: &str, id: &str, prev: Option<&serde_json::Value>) -> (Duration, serde_json::Value) {
        // The kernel finishes some of an operation after it returns (a deleted link's
        // release, timers of new ones): each call starts on a quiet system.
        std::thread::sleep(QUIET);
        self.call_now(command, id, prev)
    }

    /// `call` without the quiet gap before it: calls back to back, as a busy node makes them.
    fn call_now(&self, command: &str, id: &str, prev: Option<&serde_json::Value>) -> (Duration, serde_json::Value) {
        let mut conf: serde_json::Value = serde_json::from_str(&self.conf).unwrap();
        if let Some(prev) = prev {
            conf["prevResult"] = prev.clone();
        }
        let args = attachment(command, id, &self.bin);
        let started = Instant::now();
        let (code, printed) = run_plugin(&self.bin.join("bridge"), &args, &conf).expect("cannot run the bridge plugin");
        let took = started.elapsed();
        assert_eq!(code, 0, "{} {command} {id}: {printed}", self.label);
        (took, printed)
    }
}

/// The CNI call for container `id` on `eth0` in `/run/netns/ID`, plugins found in `bin`.
fn attachment(command: &str, id: &str, bin: &Path) -> Args {
    Args {
        command: command.into(),
        container_id: id.into(),
        netns: format!("/run/netns/{id}"),
        ifname: "eth0".into(),
        args: Vec::new(),
        path: vec![bin.display().to_string()],
    }
}

fn netns(name: &str) {
    sh(&format!("ip netns add {name}"));
}

/// The kernel's part of a veth attachment, over netlink from this process: a pair made
/// with one end in `peer_ns`, the other attached to `bridge` and up; then its removal.
fn veth_floor(host: &mut RouteClient, bridge: &str, peer_ns: &std::fs::File, name: &str) -> (Duration, Duration) {
    use std::os::fd::AsRawFd;
    let bridge = host.link(bridge).unwrap().expect("the bridge is missing").index;
    let started = Instant::now();
    host.create_veth(name, "eth0", peer_ns.as_raw_fd(), None).unwrap();
    let index = host.link(name).unwrap().unwrap().index;
    host.set_controller(index, bridge).unwrap();
    host.set_up(index).unwrap();
    let created = started.elapsed();
    let started = Instant::now();
    host.delete_link(index).unwrap();
    (created, started.elapsed())
}

pub fn run() {
    if std::env::var_os(INSIDE).is_none() {
        let status = Command::new("unshare")
            .args(["-n", "-m", "--"])
            .arg(std::env::current_exe().unwrap())
            .arg("cni")
            .env(INSIDE, "1")
            .status()
            .expect("cannot run unshare");
        assert!(status.success(), "the cni bench failed");
        return;
    }
    assert!(
        Path::new(REFERENCE_DIR).join("bridge").exists(),
        "the reference plugins are missing; `make deps` installs containernetworking-plugins"
    );
    sh("mount -t tmpfs tmpfs /run && mkdir /run/netns && mount -t sysfs sysfs /sys && ip link set lo up");
    // "berth-one" is a berth network that keeps one attachment: timed in the same rounds
    // as the others, it gives "at 500 vs at 1" from the same moments, which a machine whose
    // speed drifts between levels cannot spoil.
    let sets = [Set::new("berth", true, 0), Set::new("reference", false, 1), Set::new("berth-one", true, 2)];
    netns("berth-one-0");
    sets[2].call("ADD", "berth-one-0", None);
    for set in &sets {
        for n in 0..WARMUP {
            let id = format!("{}-warmup-{n}", set.label);
            netns(&id);
            let (_, result) = set.call("ADD", &id, None);
            set.call("DEL", &id, Some(&result));
            sh(&format!("ip netns del {id}"));
        }
    }
    let mut host = RouteClient::open().expect("cannot open netlink");
    let mut table = Table::new(
        &format!(
            "cni: bridge+host-local with ipMasq, berth vs the reference plugins 1.1.1 (median of {ROUNDS}, alternated)"
        ),
        &["operation", "berth", "reference", "berth/reference"],
    );
    back_to_back(&sets[..2], &mut table);
    let mut existing = 0;
    let mut adds_at = Vec::new();
    for level in LEVELS {
        // Fill both networks up to `level` attachments.
        while existing < level {
            for set in &sets[..2] {
                let id = format!("{}-{existing}", set.label);
                netns(&id);
                set.call("ADD", &id, None);
            }
            existing += 1;
        }
        // The probes' namespaces are made beforehand and removed afterwards, and the kernel's
        // work for the links just made (IPv6 address checks, router solicitations) and for
        // namespaces gone is let settle: the question is the cost at this many attachments,
        // not during a burst of other work. A program start is timed beside each round.
        let probe = |set: &Set, round: usize| format!("{}-probe-{level}-{round}", set.label);
        for round in 0..ROUNDS {
            for set in &sets {
                netns(&probe(set, round));
            }
        }
        std::thread::sleep(SETTLE);
        let mut adds = [Vec::new(), Vec::new(), Vec::new()];
        let mut dels = [Vec::new(), Vec::new(), Vec::new()];
        let (mut starts, mut creates, mut deletes, mut creates_one) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        netns(&format!("floor-{level}"));
        let floor_ns = std::fs::File::open(format!("/run/netns/floor-{level}")).unwrap();
        for round in 0..ROUNDS {
            for (i, set) in sets.iter().enumerate() {
                let (took, result) = set.call("ADD", &probe(set, round), None);
                adds[i].push(took);
                dels[i].push(set.call("DEL", &probe(set, round), Some(&result)).0);
            }
            let started = Instant::now();
            Command::new("/bin/true").status().expect("cannot run /bin/true");
            starts.push(started.elapsed());
            let (created, deleted) = veth_floor(&mut host, "br-berth", &floor_ns, &format!("vf-{level}-{round}"));
            creates.push(created);
            deletes.push(deleted);
            creates_one.push(veth_floor(&mut host, "br-berth-one", &floor_ns, &format!("vo-{level}-{round}")).0);
        }
        for round in 0..ROUNDS {
            for set in &sets {
                sh(&format!("ip netns del {}", probe(set, round)));
            }
        }
        let add: Vec<Duration> = adds.iter_mut().map(|s| median(s)).collect();
        let del: Vec<Duration> = dels.iter_mut().map(|s| median(s)).collect();
        table.row(vec![format!("ADD at {level} attachments"), ms(add[0]), ms(add[1]), ratio(add[0], add[1])]);
        table.row(vec![format!("DEL at {level} attachments"), ms(del[0]), ms(del[1]), ratio(del[0], del[1])]);
        table.row(vec![
            format!("berth ADD at {level} vs at 1 on another bridge, same rounds"),
            ms(add[0]),
            ms(add[2]),
            ratio(add[0], add[2]),
        ]);
        for (what, took) in [
            ("start and wait for a program (/bin/true)", &mut starts),
            ("veth create+attach+up on berth's bridge (netlink)", &mut creates),
            ("the same on the bridge with one attachment", &mut creates_one),
            ("veth delete (netlink)", &mut deletes),
        ] {
            table.row(vec![format!("floor at {level}: {what}"), ms(median(took)), "".into(), "".into()]);
        }
        adds_at.push(add[0]);
    }
    table.row(vec![
        "berth ADD at 500 vs at 1, levels one after another".into(),
        ms(adds_at[2]),
        ms(adds_at[0]),
        ratio(adds_at[2], adds_at[0]),
    ]);
    portmap_rows(&mut table);
    let floors = nftables_floors();
    for (what, took) in &floors {
        table.row(vec![format!("floor: {what}"), ms(*took), "".into(), "".into()]);
    }
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let reference_total: u64 =
        ["bridge", "host-local", "loopback", "portmap"].iter().map(|k| size(&Path::new(REFERENCE_DIR).join(k))).sum();
    let berth_size = size(&crate::bins::bin("berth-cni"));
    table.row(vec![
        "binary size (berth-cni vs bridge+host-local+loopback+portmap)".into(),
        format!("{:.1} MB", berth_size as f64 / 1e6),
        format!("{:.1} MB", reference_total as f64 / 1e6),
        format!("{:.2}x", berth_size as f64 / reference_total as f64),
    ]);
    table.publish("cni");
    crate::bench_cni_chain::run();
}

/// ADDs with no gap between them, alternating berth and the reference (then their DELs the
/// same way): the kernel's deferred work from one call lands on the next, as on a busy node.
fn back_to_back(sets: &[Set], table: &mut Table) {
    let id = |set: &Set, round: usize| format!("{}-b2b-{round}", set.label);
    for round in 0..ROUNDS {
        for set in sets {
            netns(&id(set, round));
        }
    }
    let (mut adds, mut dels) = (vec![Vec::new(); sets.len()], vec![Vec::new(); sets.len()]);
    let mut results = vec![Vec::new(); sets.len()];
    for round in 0..ROUNDS {
        for (i, set) in sets.iter().enumerate() {
            let (took, result) = set.call_now("ADD", &id(set, round), None);
            adds[i].push(took);
            results[i].push(result);
        }
    }
    let mut pending: Vec<_> = results.into_iter().map(Vec::into_iter).collect();
    for round in 0..ROUNDS {
        for (i, set) in sets.iter().enumerate() {
            let result = pending[i].next().expect("one result per round");
            dels[i].push(set.call_now("DEL", &id(set, round), Some(&result)).0);
        }
    }
    for round in 0..ROUNDS {
        for set in sets {
            sh(&format!("ip netns del {}", id(set, round)));
        }
    }
    let (add, reference_add) = (median(&mut adds[0]), median(&mut adds[1]));
    let (del, reference_del) = (median(&mut dels[0]), median(&mut dels[1]));
    table.row(vec![
        "ADD back to back (no gap, alternated)".into(),
        ms(add),
        ms(reference_add),
        ratio(add, reference_add),
    ]);
    table.row(vec![
        "DEL back to back (no gap, alternated)".into(),
        ms(del),
        ms(reference_del),
        ratio(del, reference_del),
    ]);
}

/// nf_tables' part, timed over netlink without a process of its own (median of ROUNDS):
/// a transaction adding a rule, and one removing rules whose socket is then closed.
fn nftables_floors() -> Vec<(&'static str, Duration)> {
    use berth_cni::netlink::nftables::{Batch, Expr, Family, NftClient, Verdict};
    let mut nft = NftClient::open().unwrap();
    let mut setup = Batch::new();
    setup.add_table(Family::Inet, "floor");
    setup.add_chain(Family::Inet, "floor", "floor", None);
    nft.commit(setup).unwrap();
    let (mut commit, mut released) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let mut batch = Batch::new();
        batch.add_rule(Family::Inet, "floor", "floor", &[Expr::Verdict(Verdict::Return)], Some("floor"));
        let started = Instant::now();
        nft.commit(batch).unwrap();
        commit.push(started.elapsed());
        // A process that removed nf_tables objects waits, as its socket closes, for the
        // kernel to release them after an RCU grace period.
        let mut batch = Batch::new();
        batch.flush_chain(Family::Inet, "floor", "floor");
        let started = Instant::now();
        let mut own = NftClient::open().unwrap();
        own.commit(batch).unwrap();
        drop(own);
        released.push(started.elapsed());
    }
    vec![
        ("one nf_tables transaction adding a rule (netlink)", median(&mut commit)),
        ("one removing rules, its socket closed (an RCU grace period)", median(&mut released)),
    ]
}

/// Runs portmap `command` of `bin` for container `id` on network `network`, publishing
/// `ports` host ports from `first_port` on, with `prev` as prevResult; returns the time it
/// took.
#[allow(clippy::too_many_arguments)]
fn portmap_call(
    bin: &Path,
    command: &str,
    id: &str,
    network: &str,
    backend: Option<&str>,
    first_port: u16,
    ports: u16,
    prev: &serde_json::Value,
) -> Duration {
    let mappings: Vec<serde_json::Value> = (0..ports)
        .map(|n| serde_json::json!({ "hostPort": first_port + n, "containerPort": 80, "protocol": "tcp" }))
        .collect();
    let mut conf = serde_json::json!({
        "cniVersion": "1.0.0", "name": network, "type": "portmap", "capabilities": { "portMappings": true },
        "runtimeConfig": { "portMappings": mappings }, "prevResult": prev
    });
    if let Some(backend) = backend {
        conf["backend"] = backend.into();
    }
    let args = attachment(command, id, bin);
    std::thread::sleep(QUIET);
    let started = Instant::now();
    let (code, printed) = run_plugin(&bin.join("portmap"), &args, &conf).expect("cannot run the portmap plugin");
    let took = started.elapsed();
    assert_eq!(code, 0, "portmap {command} {id} ({}): {printed}", bin.display());
    took
}

/// portmap ADD and DEL of one published port, berth (each backend) against the reference,
/// and berth's ADD and DEL of 1000 ports against one, alternated round by round, behind one
/// bridge attachment whose result is the prevResult.
fn portmap_rows(table: &mut Table) {
    let berth = PathBuf::from("/run/bench-portmap-berth");
    let reference = PathBuf::from("/run/bench-portmap-reference");
    for (dir, berth_plugin) in [(&berth, true), (&reference, false)] {
        std::fs::create_dir_all(dir).unwrap();
        for kind in ["bridge", "host-local", "portmap"] {
            let target = if berth_plugin || kind != "portmap" {
                crate::bins::bin("berth-cni")
            } else {
                Path::new(REFERENCE_DIR).join(kind)
            };
            std::os::unix::fs::symlink(target, dir.join(kind)).unwrap();
        }
    }
    let bridge = Set::new("portmap", true, 9);
    netns("pm");
    let (_, prev) = bridge.call("ADD", "pm", None);
    // (label, bin, backend, network, first port, ports)
    type Case<'a> = (&'a str, &'a Path, Option<&'a str>, &'a str, u16, u16);
    let cases: [Case; 5] = [
        ("berth nftables", &berth, None, "pm-nft", 8000, 1),
        ("berth iptables", &berth, Some("iptables"), "pm-ipt", 8100, 1),
        ("reference", &reference, None, "pm-ref", 8200, 1),
        ("berth nftables, 1000 ports", &berth, None, "pm-many", 10000, 1000),
        ("berth iptables, 1000 ports", &berth, Some("iptables"), "pm-many-ipt", 20000, 1000),
    ];
    let mut adds: Vec<Vec<Duration>> = vec![Vec::new(); cases.len()];
    let mut dels: Vec<Vec<Duration>> = vec![Vec::new(); cases.len()];
    for round in 0..WARMUP + ROUNDS {
        for (i, (_, bin, backend, network, first, ports)) in cases.iter().enumerate() {
            let add = portmap_call(bin, "ADD", "pm", network, *backend, *first, *ports, &prev);
            let del = portmap_call(bin, "DEL", "pm", network, *backend, *first, *ports, &prev);
            if round >= WARMUP {
                adds[i].push(add);
                dels[i].push(del);
            }
        }
    }
    let add: Vec<Duration> = adds.iter_mut().map(|s| median(s)).collect();
    let del: Vec<Duration> = dels.iter_mut().map(|s| median(s)).collect();
    for (i, backend) in [(0, "nftables (default)"), (1, "iptables")] {
        table.row(vec![
            format!("portmap ADD, 1 port: berth {backend} vs reference (goal <= 0.1x)"),
            ms(add[i]),
            ms(add[2]),
            ratio(add[i], add[2]),
        ]);
        table.row(vec![
            format!("portmap DEL, 1 port: berth {backend} vs reference (goal <= 0.35x)"),
            ms(del[i]),
            ms(del[2]),
            ratio(del[i], del[2]),
        ]);
    }
    for (many, one, backend) in [(3, 0, "nftables"), (4, 1, "iptables")] {
        table.row(vec![
            format!("berth portmap ADD, {backend}: 1000 ports vs 1 (goal <= 3x)"),
            ms(add[many]),
            ms(add[one]),
            ratio(add[many], add[one]),
        ]);
        table.row(vec![
            format!("berth portmap DEL, {backend}: 1000 ports vs 1"),
            ms(del[many]),
            ms(del[one]),
            ratio(del[many], del[one]),
        ]);
    }
    bridge.call("DEL", "pm", Some(&prev));
}
