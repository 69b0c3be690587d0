//! `make bench` runtime section: berth against runc on `run` of /bin/true,
//! create+start+delete, and `state`, alternated in one run.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::bench::{alternate, ms, ratio, time, Contestant, Table};
use crate::fixtures::{Bundle, TempDir};

const ROUNDS: usize = 30;

/// One runtime binary with its own state root.
struct Runtime {
    name: &'static str,
    bin: std::path::PathBuf,
    root: TempDir,
}

impl Runtime {
    fn call(&self, args: &[&str]) {
        let status = Command::new(&self.bin)
            .arg("--root")
            .arg(self.root.path())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.name));
        assert!(status.success(), "{} {args:?} failed: {status}", self.name);
    }
}

pub fn run() {
    let runc = crate::privilege::have_program("runc");
    assert!(runc, "runc is not installed; `make deps` installs it");
    let runtimes = [
        Runtime { name: "berth", bin: crate::bins::bin("berth"), root: TempDir::new("bench-berth") },
        Runtime { name: "runc", bin: "runc".into(), root: TempDir::new("bench-runc") },
    ];
    let true_bundle = Bundle::busybox("bench-true", &["/bin/true"]);
    let mut table =
        Table::new("runtime: berth vs runc (median of 30, alternated)", &["operation", "berth", "runc", "berth/runc"]);

    let bundle = true_bundle.path().to_str().unwrap().to_string();
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
    let state = measure(&runtimes, |rt, _| time(|| rt.call(&["state", "bench-state"])));
    for rt in &runtimes {
        rt.call(&["delete", "--force", "bench-state"]);
    }
    table.row(row("state", state));
    table.publish("runtime");
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
