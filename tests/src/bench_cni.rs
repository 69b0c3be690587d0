//! `make bench` cni section, run inside a private network namespace (the bench re-runs
//! itself under `unshare -n -m`): bridge+host-local ADD and DEL with ipMasq at 1, 50 and
//! 500 existing attachments (DEL with the ADD's result as prevResult), berth against Debian's reference plugins, alternated; the
//! floors (a process start, the kernel's veth and nf_tables work) measured beside them;
//! binary sizes.

use berth_cni::exec::run_plugin;
use berth_cni::skel::Args;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::bench::{median, ms, ratio, Table};

const REFERENCE_DIR: &str = "/usr/lib/cni";
const ROUNDS: usize = 15;
const LEVELS: [usize; 3] = [1, 50, 500];
const INSIDE: &str = "BERTH_BENCH_PRIVATE_NETNS";

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
        let mut conf: serde_json::Value = serde_json::from_str(&self.conf).unwrap();
        if let Some(prev) = prev {
            conf["prevResult"] = prev.clone();
        }
        let args = Args { command: command.into(), container_id: id.into(), netns: format!("/run/netns/{id}"), ifname: "eth0".into(), args: Vec::new(), path: vec![self.bin.display().to_string()] };
        let started = Instant::now();
        let (code, printed) = run_plugin(&self.bin.join("bridge"), &args, &conf).expect("cannot run the bridge plugin");
        let took = started.elapsed();
        assert_eq!(code, 0, "{} {command} {id}: {printed}", self.label);
        (took, printed)
    }
}

fn netns(name: &str) {
    sh(&format!("ip netns add {name}"));
}

pub fn run() {
    if std::env::var_os(INSIDE).is_none() {
        let status = Command::new("unshare").args(["-n", "-m", "--"]).arg(std::env::current_exe().unwrap()).arg("cni").env(INSIDE, "1").status().expect("cannot run unshare");
        assert!(status.success(), "the cni bench failed");
        return;
    }
    assert!(Path::new(REFERENCE_DIR).join("bridge").exists(), "the reference plugins are missing; `make deps` installs containernetworking-plugins");
    sh("mount -t tmpfs tmpfs /run && mkdir /run/netns && mount -t sysfs sysfs /sys && ip link set lo up");
    let sets = [Set::new("berth", true, 0), Set::new("reference", false, 1)];
    let mut table = Table::new(
        &format!("cni: bridge+host-local with ipMasq, berth vs the reference plugins 1.1.1 (median of {ROUNDS}, alternated)"),
        &["operation", "berth", "reference", "berth/reference"],
    );
    let mut existing = 0;
    let mut adds_at = Vec::new();
    for level in LEVELS {
        // Fill both networks up to `level` attachments.
        while existing < level {
            for set in &sets {
                let id = format!("{}-{existing}", set.label);
                netns(&id);
                set.call("ADD", &id, None);
            }
            existing += 1;
        }
        let mut adds = vec![Vec::new(), Vec::new()];
        let mut dels = vec![Vec::new(), Vec::new()];
        for round in 0..ROUNDS {
            for (i, set) in sets.iter().enumerate() {
                let id = format!("{}-probe-{level}-{round}", set.label);
                netns(&id);
                let (took, result) = set.call("ADD", &id, None);
                adds[i].push(took);
                dels[i].push(set.call("DEL", &id, Some(&result)).0);
                sh(&format!("ip netns del {id}"));
            }
        }
        let add: Vec<Duration> = adds.iter_mut().map(|s| median(s)).collect();
        let del: Vec<Duration> = dels.iter_mut().map(|s| median(s)).collect();
        table.row(vec![format!("ADD at {level} attachments"), ms(add[0]), ms(add[1]), ratio(add[0], add[1])]);
        table.row(vec![format!("DEL at {level} attachments"), ms(del[0]), ms(del[1]), ratio(del[0], del[1])]);
        adds_at.push(add[0]);
    }
    table.row(vec!["berth ADD at 500 vs at 1".into(), ms(adds_at[2]), ms(adds_at[0]), ratio(adds_at[2], adds_at[0])]);
    let floors = floors();
    for (what, took) in &floors {
        table.row(vec![format!("floor: {what}"), ms(*took), "".into(), "".into()]);
    }
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let reference_total: u64 = ["bridge", "host-local", "loopback", "portmap"].iter().map(|k| size(&Path::new(REFERENCE_DIR).join(k))).sum();
    let berth_size = size(&crate::bins::bin("berth-cni"));
    table.row(vec!["binary size (berth-cni vs bridge+host-local+loopback+portmap)".into(), format!("{:.1} MB", berth_size as f64 / 1e6), format!("{:.1} MB", reference_total as f64 / 1e6), format!("{:.2}x", berth_size as f64 / reference_total as f64)]);
    table.publish("cni");
}

/// The parts no plugin can avoid, timed without a process of their own (median of ROUNDS):
/// starting a program (CNI runs one plugin process, and bridge one IPAM process), and the
/// kernel's work over netlink for a veth and for one nf_tables transaction.
fn floors() -> Vec<(&'static str, Duration)> {
    use berth_cni::netlink::Netlink;
    use berth_cni::nftables::{Batch, Expr, Family, Nftables, Verdict};
    use std::os::fd::AsRawFd;
    sh("ip link add br-floor type bridge && ip link set br-floor up && ip netns add floor");
    let peer_ns = std::fs::File::open("/run/netns/floor").unwrap();
    let mut host = Netlink::open().unwrap();
    let bridge = host.link("br-floor").unwrap().unwrap().index;
    let mut nft = Nftables::open().unwrap();
    let (mut spawn, mut create, mut delete, mut commit) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for n in 0..ROUNDS {
        let started = Instant::now();
        Command::new("/bin/true").status().unwrap();
        spawn.push(started.elapsed());
        let started = Instant::now();
        host.create_veth(&format!("vf{n}"), "eth0", peer_ns.as_raw_fd(), None).unwrap();
        let index = host.link(&format!("vf{n}")).unwrap().unwrap().index;
        host.set_controller(index, bridge).unwrap();
        host.set_up(index).unwrap();
        create.push(started.elapsed());
        let started = Instant::now();
        host.delete_link(index).unwrap();
        delete.push(started.elapsed());
        let mut batch = Batch::new();
        batch.add_table(Family::Inet, "floor");
        batch.add_chain(Family::Inet, "floor", "floor", None);
        batch.add_rule(Family::Inet, "floor", "floor", &[Expr::Verdict(Verdict::Return)], Some("floor"));
        let started = Instant::now();
        nft.commit(batch).unwrap();
        commit.push(started.elapsed());
    }
    vec![
        ("start and wait for a program (/bin/true)", median(&mut spawn)),
        ("veth create+attach+up (netlink)", median(&mut create)),
        ("veth delete (netlink)", median(&mut delete)),
        ("one nf_tables transaction (netlink)", median(&mut commit)),
    ]
}
