//! The bench harness: runs berth and a peer alternately on the same work, takes medians and
//! ratios, and writes each section's table under `target/bench/`.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// Median of a list of durations (mean of the two middle ones for an even count).
pub fn median(samples: &mut [Duration]) -> Duration {
    assert!(!samples.is_empty(), "median of no samples");
    samples.sort();
    let mid = samples.len() / 2;
    if samples.len() % 2 == 1 {
        samples[mid]
    } else {
        (samples[mid - 1] + samples[mid]) / 2
    }
}

/// One contestant: a label and the work to time once (setup outside the timed part is the
/// closure's own business; it returns the time of the part that counts).
pub struct Contestant<'a> {
    pub label: String,
    pub run: Box<dyn FnMut() -> Duration + 'a>,
}

/// Times a closure and returns its wall time.
pub fn time(work: impl FnOnce()) -> Duration {
    let start = Instant::now();
    work();
    start.elapsed()
}

/// Runs every contestant `rounds` times, alternating them round by round, after one
/// untimed warm-up each; returns each contestant's median.
pub fn alternate(contestants: &mut [Contestant], rounds: usize) -> Vec<Duration> {
    for c in contestants.iter_mut() {
        (c.run)();
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(rounds); contestants.len()];
    for _ in 0..rounds {
        for (i, c) in contestants.iter_mut().enumerate() {
            samples[i].push((c.run)());
        }
    }
    samples.iter_mut().map(|s| median(s)).collect()
}

/// A markdown table of measurements, one row per case.
pub struct Table {
    pub title: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: &str, header: &[&str]) -> Table {
        Table { title: title.into(), header: header.iter().map(|s| s.to_string()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut out =
            format!("### {}\n\n| {} |\n|{}\n", self.title, self.header.join(" | "), "---|".repeat(self.header.len()));
        for row in &self.rows {
            out.push_str(&format!("| {} |\n", row.join(" | ")));
        }
        out
    }

    /// Prints the table and writes it to `target/bench/<file>.md`.
    pub fn publish(&self, file: &str) -> PathBuf {
        let text = self.render();
        println!("{text}");
        let dir = bench_dir();
        std::fs::create_dir_all(&dir).expect("cannot create target/bench");
        let path = dir.join(format!("{file}.md"));
        std::fs::write(&path, &text).expect("cannot write the bench table");
        path
    }
}

/// `target/bench` of the workspace (or `$BERTH_BENCH_DIR`).
pub fn bench_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BERTH_BENCH_DIR") {
        return PathBuf::from(dir);
    }
    let mut dir = crate::bins::bin_dir();
    dir.pop(); // the profile directory's parent is target/
    dir.join("bench")
}

/// Milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// `a / b` as a ratio with two decimals.
pub fn ratio(a: Duration, b: Duration) -> String {
    format!("{:.2}x", a.as_secs_f64() / b.as_secs_f64())
}

/// Outside a section that runs in private network and mount namespaces: re-runs this binary
/// for section `name` under `unshare -n -m`, with `stage_var` set to `namespace`, `dir_var`
/// naming a private directory (made from `dir_prefix`: keep it short, socket paths and
/// podman's runroot are limited) and `BERTH_CGROUP_PARENT` a cgroup parent; removes both
/// afterwards, also when the section failed (it aborts, running no Drop), and asserts it passed.
pub fn run_in_private_namespaces(name: &str, stage_var: &str, dir_var: &str, dir_prefix: &str) {
    let dir = crate::fixtures::TempDir::new(dir_prefix);
    let cgroup_parent = format!("berth-bench-{name}-{}", std::process::id());
    let status = Command::new("unshare")
        .args(["-n", "-m", "--"])
        .arg(std::env::current_exe().unwrap())
        .arg(name)
        .env(stage_var, "namespace")
        .env(crate::private_namespaces::INSIDE, "1")
        .env(dir_var, dir.path())
        .env("BERTH_CGROUP_PARENT", &cgroup_parent)
        .env("BERTH_TEST_TMP", dir.path())
        .status()
        .expect("cannot run unshare");
    for mount in crate::runtime::cgroup_mounts() {
        crate::runtime::remove_cgroup_tree(&mount.join(&cgroup_parent));
    }
    drop(dir);
    assert!(status.success(), "the {name} bench failed ({status}); its error is above");
}

/// Inside the private namespaces of section `name`: /run and /var/lib made private, the
/// bench as a child process (`stage_var` set to `bench`) whose orphans (containerds, shims,
/// containers of a failed run) come back to this process, which stops each by its pid
/// afterwards. Exits with the bench's status.
pub fn supervise_in_private_namespaces(name: &str, stage_var: &str) -> ! {
    // SAFETY: prctl with integer arguments only.
    let subreaper = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(subreaper, 0, "cannot become the bench's subreaper: {}", std::io::Error::last_os_error());
    crate::private_namespaces::make_run_and_var_lib_private();
    let mut bench = Command::new(std::env::current_exe().unwrap())
        .arg(name)
        .env(stage_var, "bench")
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run the {name} bench: {e}"));
    // Serving shims outlive the `start` that spawned them and come back here when they exit.
    let status = loop {
        if let Some(status) = bench.try_wait().unwrap_or_else(|e| panic!("cannot wait for the {name} bench: {e}")) {
            break status;
        }
        reap_exited_orphans(bench.id());
        std::thread::sleep(Duration::from_millis(200));
    };
    reap_exited_orphans(bench.id());
    let left = stop_orphans();
    if status.success() {
        assert!(left.is_empty(), "the {name} bench left processes running: {left:?}");
    }
    std::process::exit(status.code().unwrap_or(1));
}

/// This process's children: pid, whether it has exited (a zombie), command line.
fn children() -> Vec<(i32, bool, String)> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let mut after_name = stat.rsplit(')').next()?.split_whitespace();
            let (state, parent) = (after_name.next()?, after_name.next()?);
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            (parent == me).then(|| (pid, state == "Z", String::from_utf8_lossy(&cmdline).replace('\0', " ")))
        })
        .collect()
}

/// Reaps the orphans that have exited, except the bench itself (whose status is waited for).
fn reap_exited_orphans(bench: u32) {
    for (pid, exited, _) in children() {
        if exited && pid != bench as i32 {
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        }
    }
}

/// Kills this process's children (orphans it reaped as subreaper) by pid, and theirs as
/// they come back, until none is left; the command lines of those it stopped.
fn stop_orphans() -> Vec<String> {
    let mut stopped = Vec::new();
    for _ in 0..20 {
        let children = children();
        if children.is_empty() {
            break;
        }
        for (pid, exited, cmdline) in children {
            if exited {
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
                continue;
            }
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
            stopped.push(cmdline);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stopped
}
