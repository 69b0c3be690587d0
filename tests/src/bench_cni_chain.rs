//! `make bench` cni section, the default chain: bridge+portmap+firewall+tuning as podman
//! writes its networks (one published port, as `podman run -p`), run as a runtime runs a
//! conflist (ADD in order, each plugin given the previous result; DEL in reverse with the
//! final result), berth's plugin directory against Debian's reference plugins, alternated;
//! and 64 containers attached at once, timed until every one answers a ping from the host.
//! Runs inside the cni section's private network namespace.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_cni::exec::run_plugin;
use berth_cni::skel::Args;
use serde_json::{json, Value};

use crate::bench::{median, ms, ratio, Table};

const REFERENCE_DIR: &str = "/usr/lib/cni";
const ROUNDS: usize = 21;
const PARALLEL: usize = 64;
/// The plugins a podman network needs, and the chain's order.
const KINDS: [&str; 5] = ["bridge", "host-local", "portmap", "firewall", "tuning"];

fn sh(script: &str) {
    let out = Command::new("sh").arg("-ec").arg(script).output().expect("cannot run sh");
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
}

/// One plugin directory and the podman-style network it serves.
struct Chain {
    label: &'static str,
    bin: PathBuf,
    plugins: Vec<Value>,
}

impl Chain {
    fn new(label: &'static str, berth: bool, index: usize) -> Chain {
        let bin = PathBuf::from(format!("/run/bench-chain-{label}"));
        std::fs::create_dir_all(&bin).unwrap();
        for kind in KINDS {
            let target = if berth { crate::bins::bin("berth-cni") } else { Path::new(REFERENCE_DIR).join(kind) };
            std::os::unix::fs::symlink(target, bin.join(kind)).unwrap();
        }
        // podman 4.3's CNI backend writes these plugins and keys for the default network
        // and for `podman network create` (the firewall's backend left to choose).
        let subnet = format!("10.{}.0.0/16", 120 + index);
        let gateway = format!("10.{}.0.1", 120 + index);
        let plugins = vec![
            json!({ "type": "bridge", "bridge": format!("cni-{label}"), "isGateway": true, "ipMasq": true, "hairpinMode": true,
                    "ipam": { "type": "host-local", "dataDir": format!("/run/ipam-chain-{label}"), "routes": [{ "dst": "0.0.0.0/0" }],
                              "ranges": [[{ "subnet": subnet, "gateway": gateway }]] } }),
            json!({ "type": "portmap", "capabilities": { "portMappings": true } }),
            json!({ "type": "firewall", "backend": "" }),
            json!({ "type": "tuning" }),
        ];
        Chain { label, bin, plugins }
    }

    fn conf(&self, index: usize, host_port: u16, prev: Option<&Value>) -> Value {
        let mut conf = self.plugins[index].clone();
        conf["cniVersion"] = "0.4.0".into();
        conf["name"] = format!("chain-{}", self.label).into();
        if conf.get("capabilities").is_some() {
            conf["runtimeConfig"] =
                json!({ "portMappings": [{ "hostPort": host_port, "containerPort": 80, "protocol": "tcp" }] });
        }
        if let Some(prev) = prev {
            conf["prevResult"] = prev.clone();
        }
        conf
    }

    fn args(&self, command: &str, id: &str) -> Args {
        Args {
            command: command.into(),
            container_id: id.into(),
            netns: format!("/run/netns/{id}"),
            ifname: "eth0".into(),
            args: Vec::new(),
            path: vec![self.bin.display().to_string()],
        }
    }

    /// Runs one plugin of the chain; what it printed and the time it took.
    fn run(&self, command: &str, index: usize, id: &str, host_port: u16, prev: Option<&Value>) -> (Value, Duration) {
        let plugin = self.bin.join(self.plugins[index]["type"].as_str().unwrap());
        let conf = self.conf(index, host_port, prev);
        let started = Instant::now();
        let (code, printed) = run_plugin(&plugin, &self.args(command, id), &conf)
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", plugin.display()));
        let took = started.elapsed();
        assert_eq!(code, 0, "{} {command} {id} by {}: {printed}", self.label, plugin.display());
        (printed, took)
    }

    /// The chain's ADD for container `id`: its final result, and each plugin's time in
    /// the chain's order.
    fn add(&self, id: &str, host_port: u16) -> (Value, Vec<Duration>) {
        let mut prev: Option<Value> = None;
        let mut took = Vec::new();
        for index in 0..self.plugins.len() {
            let (printed, time) = self.run("ADD", index, id, host_port, prev.as_ref());
            prev = Some(printed);
            took.push(time);
        }
        (prev.unwrap(), took)
    }

    /// The chain's DEL; each plugin's time in the chain's order.
    fn del(&self, id: &str, host_port: u16, result: &Value) -> Vec<Duration> {
        let mut took: Vec<Duration> =
            (0..self.plugins.len()).rev().map(|index| self.run("DEL", index, id, host_port, Some(result)).1).collect();
        took.reverse();
        took
    }
}

fn address(result: &Value) -> String {
    result["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string()
}

/// ADD and ping until the container answers; the time from ADD's start.
fn attach_until_answering(chain: &Chain, id: &str, host_port: u16) -> (Duration, Value) {
    let started = Instant::now();
    let (result, _) = chain.add(id, host_port);
    let ip = address(&result);
    for _ in 0..50 {
        let answered =
            Command::new("busybox").args(["ping", "-c1", "-W1", &ip]).output().is_ok_and(|o| o.status.success());
        if answered {
            return (started.elapsed(), result);
        }
    }
    panic!("{} container {id} at {ip} never answered", chain.label);
}

/// Runs the default-chain rows (inside the cni section's private namespace) and publishes
/// them as `cni-chain`.
pub fn run() {
    let chains = [Chain::new("berth", true, 0), Chain::new("reference", false, 1)];
    let mut table = Table::new(
        &format!("cni: the default chain bridge+portmap+firewall+tuning as podman 4.3 writes it, one published port, berth vs the reference plugins 1.1.1 (median of {ROUNDS}, alternated)"),
        &["operation", "berth", "reference", "berth/reference"],
    );
    // Per chain: the whole chain's times, then each plugin's, for ADD and for DEL.
    let plugins = chains[0].plugins.len();
    let mut adds = [vec![Vec::new(); plugins + 1], vec![Vec::new(); plugins + 1]];
    let mut dels = [vec![Vec::new(); plugins + 1], vec![Vec::new(); plugins + 1]];
    for round in 0..ROUNDS {
        for (i, chain) in chains.iter().enumerate() {
            let id = format!("chain-{}-{round}", chain.label);
            sh(&format!("ip netns add {id}"));
            let started = Instant::now();
            let (result, each) = chain.add(&id, 18080);
            adds[i][0].push(started.elapsed());
            let started = Instant::now();
            let each_del = chain.del(&id, 18080, &result);
            dels[i][0].push(started.elapsed());
            for p in 0..plugins {
                adds[i][p + 1].push(each[p]);
                dels[i][p + 1].push(each_del[p]);
            }
            sh(&format!("ip netns del {id}"));
        }
    }
    for (what, [berth, reference]) in [("ADD", &mut adds), ("DEL", &mut dels)] {
        for (p, (berth, reference)) in berth.iter_mut().zip(reference.iter_mut()).enumerate() {
            let (ours, theirs) = (median(berth), median(reference));
            let label = match p {
                0 if what == "ADD" => "chain ADD (goal <= 0.15x)".to_string(),
                0 => "chain DEL".to_string(),
                p => format!("  of which {} {what}", chains[0].plugins[p - 1]["type"].as_str().unwrap()),
            };
            table.row(vec![label, ms(ours), ms(theirs), ratio(ours, theirs)]);
        }
    }
    let mut attach = Vec::new();
    let mut detach = Vec::new();
    for chain in &chains {
        let ids: Vec<String> = (0..PARALLEL).map(|n| format!("par-{}-{n}", chain.label)).collect();
        for id in &ids {
            sh(&format!("ip netns add {id}"));
        }
        let started = Instant::now();
        let results: Vec<Value> = std::thread::scope(|scope| {
            let workers: Vec<_> = ids
                .iter()
                .enumerate()
                .map(|(n, id)| scope.spawn(move || attach_until_answering(chain, id, 20000 + n as u16).1))
                .collect();
            workers.into_iter().map(|w| w.join().expect("an attaching thread failed")).collect()
        });
        attach.push(started.elapsed());
        let started = Instant::now();
        std::thread::scope(|scope| {
            for (n, (id, result)) in ids.iter().zip(&results).enumerate() {
                scope.spawn(move || chain.del(id, 20000 + n as u16, result));
            }
        });
        detach.push(started.elapsed());
        for id in &ids {
            sh(&format!("ip netns del {id}"));
        }
    }
    table.row(vec![
        format!("{PARALLEL} containers attached at once, until all answer a ping"),
        ms(attach[0]),
        ms(attach[1]),
        ratio(attach[0], attach[1]),
    ]);
    table.row(vec![
        format!("{PARALLEL} containers detached at once"),
        ms(detach[0]),
        ms(detach[1]),
        ratio(detach[0], detach[1]),
    ]);
    table.publish("cni-chain");
}
