//! `make bench` runtime section: berth against runc, alternated in one run: `run` of
//! /bin/true, create+start+delete, `exec` of /bin/true into a running container and the
//! query commands (`state`, `kill` with signal 0, `list`, `ps --format json`); then the peak
//! resident memory of each command's own process, and the size of each runtime's binary.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::bench::{alternate, ms, ratio, time, Contestant, Table};
use crate::fixtures::{Bundle, TempDir};

const ROUNDS: usize = 30;
/// Peak memory barely varies from call to call: a few rounds give a stable median.
const MEMORY_ROUNDS: usize = 5;

/// One runtime binary with its own state root.
struct Runtime {
    name: &'static str,
    bin: PathBuf,
    root: TempDir,
}

impl Runtime {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.bin);
        command.arg("--root").arg(self.root.path()).args(args).stdin(Stdio::null()).stdout(Stdio::null());
        command
    }

    fn call(&self, args: &[&str]) {
        let status = self.command(args).status().unwrap_or_else(|e| panic!("cannot run {}: {e}", self.name));
        assert!(status.success(), "{} {args:?} failed: {status}", self.name);
    }

    /// Runs one command and returns the peak resident memory of the runtime's own process, in KiB.
    fn peak_memory(&self, args: &[&str]) -> u64 {
        let (peak, status) = crate::peak_rss::run(&mut self.command(args));
        assert!(status.success(), "{} {args:?} failed: {status}", self.name);
        peak
    }
}

pub fn run() {
    let runc = program_path("runc").expect("runc is not installed; `make deps` installs it");
    let runtimes = [
        Runtime { name: "berth", bin: crate::bins::bin("berth"), root: TempDir::new("bench-berth") },
        Runtime { name: "runc", bin: runc, root: TempDir::new("bench-runc") },
    ];
    let true_bundle = Bundle::busybox("bench-true", &["/bin/true"]);
    let bundle = true_bundle.path().to_str().unwrap().to_string();
    let mut table =
        Table::new("runtime: berth vs runc (median of 30, alternated)", &["operation", "berth", "runc", "berth/runc"]);

    let run_true = measure(&runtimes, |rt, n| {
        let id = format!("bench-run-{n}");
        time(|| rt.call(&["run", "--bundle", &bundle, &id]))
    });
    table.row(row("run /bin/true", run_true));

    let lifecycle = measure(&runtimes, |rt, n| {
        let id = format!("bench-life-{n}");
        time(|| {
            rt.call(&["create", "--bundle", &bundle, &id]);
            rt.call(&["start", &id]);
            rt.call(&["delete", "--force", &id]);
        })
    });
    table.row(row("create+start+delete", lifecycle));

    // One long-running container per runtime, each with its own bundle and cgroup.
    let sleepers: Vec<Bundle> =
        runtimes.iter().map(|rt| Bundle::busybox(&format!("bench-state-{}", rt.name), &["sleep", "600"])).collect();
    for (rt, b) in runtimes.iter().zip(&sleepers) {
        rt.call(&["run", "--detach", "--bundle", b.path().to_str().unwrap(), "bench-state"]);
    }
    let operations: [(&str, &[&str]); 5] = [
        ("exec /bin/true", &["exec", "bench-state", "/bin/true"]),
        ("state", &["state", "bench-state"]),
        ("kill (signal 0)", &["kill", "bench-state", "0"]),
        ("list", &["list"]),
        ("ps --format json", &["ps", "--format", "json", "bench-state"]),
    ];
    for (name, args) in operations {
        table.row(row(name, measure(&runtimes, |rt, _| time(|| rt.call(args)))));
    }
    for rt in &runtimes {
        rt.call(&["delete", "--force", "bench-state"]);
    }
    table.publish("runtime");

    memory_table(&runtimes, &bundle, &sleepers).publish("runtime-memory");
}

/// Peak resident memory of each command's own runtime process (for a foreground `run`
/// and `exec`, the process that waits), and the size of each runtime's binary.
fn memory_table(runtimes: &[Runtime], true_bundle: &str, sleepers: &[Bundle]) -> Table {
    let commands =
        ["create", "start", "state", "kill (signal 0)", "list", "ps --format json", "exec /bin/true", "delete --force"];
    // samples[command][runtime]
    let mut samples = vec![vec![Vec::new(); runtimes.len()]; commands.len() + 1];
    for round in 0..MEMORY_ROUNDS {
        for (r, (rt, sleeper)) in runtimes.iter().zip(sleepers).enumerate() {
            let id = format!("bench-memory-{round}");
            let steps: [&[&str]; 8] = [
                &["create", "--bundle", sleeper.path().to_str().unwrap(), &id],
                &["start", &id],
                &["state", &id],
                &["kill", &id, "0"],
                &["list"],
                &["ps", "--format", "json", &id],
                &["exec", &id, "/bin/true"],
                &["delete", "--force", &id],
            ];
            for (c, args) in steps.iter().enumerate() {
                samples[c][r].push(rt.peak_memory(args));
            }
            let run_id = format!("bench-memory-run-{round}");
            samples[commands.len()][r].push(rt.peak_memory(&["run", "--bundle", true_bundle, &run_id]));
        }
    }
    let mut table = Table::new(
        &format!(
            "runtime memory: peak RSS of the runtime's own process, children not counted (VmHWM under ptrace, at exit and before each exec; median of {MEMORY_ROUNDS})"
        ),
        &["command", "berth", "runc", "berth/runc"],
    );
    for (name, per_runtime) in commands.iter().chain(&["run /bin/true (the waiting process)"]).zip(&mut samples) {
        let medians: Vec<u64> = per_runtime.iter_mut().map(|s| median(s)).collect();
        table.row(vec![name.to_string(), mb(medians[0]), mb(medians[1]), times(medians[0], medians[1])]);
    }
    let sizes: Vec<u64> = runtimes
        .iter()
        .map(|rt| std::fs::metadata(&rt.bin).unwrap_or_else(|e| panic!("cannot stat {}: {e}", rt.bin.display())).len())
        .collect();
    table.row(vec!["binary size".into(), mb(sizes[0] / 1024), mb(sizes[1] / 1024), times(sizes[0], sizes[1])]);
    table
}

/// Alternates the runtimes on one operation; `work` gets the runtime and a round number.
fn measure(runtimes: &[Runtime], mut work: impl FnMut(&Runtime, usize) -> Duration) -> Vec<Duration> {
    let work = std::cell::RefCell::new(&mut work);
    let mut contestants: Vec<Contestant> = runtimes
        .iter()
        .map(|rt| {
            let mut n = 0;
            let work = &work;
            Contestant {
                label: rt.name.to_string(),
                run: Box::new(move || {
                    n += 1;
                    (work.borrow_mut())(rt, n)
                }),
            }
        })
        .collect();
    alternate(&mut contestants, ROUNDS)
}

fn row(name: &str, medians: Vec<Duration>) -> Vec<String> {
    vec![name.to_string(), ms(medians[0]), ms(medians[1]), ratio(medians[0], medians[1])]
}

/// Where `program` is found on $PATH (the file itself, links followed).
fn program_path(program: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths).map(|dir| dir.join(program)).find(|path| path.is_file())?.canonicalize().ok()
}

fn median(samples: &mut [u64]) -> u64 {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// KiB as MB with two decimals.
fn mb(kib: u64) -> String {
    format!("{:.2} MB", kib as f64 / 1024.0)
}

fn times(a: u64, b: u64) -> String {
    format!("{:.2}x", a as f64 / b as f64)
}
