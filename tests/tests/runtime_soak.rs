//! Soak: 200 sequential containers through create, start, kill and delete leave the host
//! as they found it: mounts, cgroup trees, the state root and processes; the descriptors
//! berth holds do not grow, in a long-lived `berth events` stream and in containers' inits.

use std::collections::BTreeSet;
use std::path::Path;

use berth_tests::fixtures::{container_id, Bundle};
use berth_tests::privilege::require_root;
use berth_tests::runtime::{cgroup_mounts, Berth};

const CONTAINERS: usize = 200;

fn mountinfo() -> BTreeSet<String> {
    // Mount ids change with every mount, so compare what is mounted where.
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            format!("{} {}", fields[4], l.split_once(" - ").map(|x| x.1).unwrap_or(""))
        })
        .collect()
}

fn cgroup_tree() -> BTreeSet<String> {
    let mut dirs = BTreeSet::new();
    for mount in cgroup_mounts() {
        walk(&mount, 0, &mut dirs);
    }
    dirs
}

fn walk(dir: &Path, depth: usize, out: &mut BTreeSet<String>) {
    out.insert(dir.display().to_string());
    if depth > 3 {
        return;
    }
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            walk(&entry.path(), depth + 1, out);
        }
    }
}

/// Processes running the berth binary or living in the bundle's rootfs.
fn container_processes(berth_bin: &Path, rootfs: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let exe = std::fs::read_link(entry.path().join("exe")).ok();
        let root = std::fs::read_link(entry.path().join("root")).ok();
        if exe.as_deref() == Some(berth_bin) || root.as_deref() == Some(rootfs) {
            found.push(name);
        }
    }
    found
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// The descriptors a statistics stream holds between its reads: the fewest seen over 20
/// looks (a look may fall in the middle of a read, which opens cgroup files for a moment).
fn resting_fds(pid: u32) -> usize {
    (0..20)
        .map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(3));
            open_fds(pid)
        })
        .min()
        .unwrap()
}

/// A `berth events` stream (a statistics line every 10 ms), read on a thread so it never
/// blocks on a full pipe; killed by pid on drop.
struct EventStream {
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl EventStream {
    fn start(berth: &Berth, id: &str) -> EventStream {
        use std::io::BufRead;
        let mut child =
            berth.command(&["events", "--interval", "10ms", id]).stdout(std::process::Stdio::piped()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                if line.map(|l| l.contains("\"stats\"")).unwrap_or(false) {
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        EventStream { child, lines }
    }

    fn lines(&self) -> usize {
        self.lines.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits (up to 10 s) until the stream has printed `count` statistics lines.
    fn wait_for(&self, count: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.lines() < count {
            assert!(std::time::Instant::now() < deadline, "berth events printed {} lines, not {count}", self.lines());
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn two_hundred_containers_leave_no_trace() {
    if !require_root("two_hundred_containers_leave_no_trace") {
        return;
    }
    let bundle = Bundle::busybox("soak", &["sleep", "300"]);
    let berth = Berth::new("soak");
    let rootfs = std::fs::canonicalize(bundle.rootfs()).unwrap();
    let bin = std::fs::canonicalize(&berth.bin).unwrap();
    let bundle_path = bundle.path().to_str().unwrap().to_string();

    let (mounts, cgroups) = (mountinfo(), cgroup_tree());
    // A container watched by a long-lived `berth events` for the whole soak.
    let watched = container_id("soak-watched");
    let watched_bundle = Bundle::busybox("soak-watched", &["sleep", "600"]);
    berth.ok(&["run", "-d", "-b", watched_bundle.path().to_str().unwrap(), &watched]);
    let events = EventStream::start(&berth, &watched);
    events.wait_for(3);
    let events_fds = resting_fds(events.child.id());
    let mut container_fds = Vec::new();
    for n in 0..CONTAINERS {
        let id = container_id(&format!("soak-{n}"));
        berth.ok(&["create", "-b", &bundle_path, &id]);
        berth.ok(&["start", &id]);
        let pid = berth.state(&id)["pid"].as_i64().unwrap();
        if n == 0 || n == CONTAINERS - 1 {
            // What the runtime leaves open in the container's process.
            container_fds.push(std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count());
        }
        berth.ok(&["kill", &id, "KILL"]);
        berth.wait_status(&id, "stopped");
        berth.ok(&["delete", &id]);
    }

    // Hundreds of statistics reads later, the stream holds the descriptors it held at the start.
    events.wait_for(events.lines().max(200));
    assert_eq!(
        resting_fds(events.child.id()),
        events_fds,
        "berth events' descriptors grew over {} reads",
        events.lines()
    );
    drop(events);
    berth.ok(&["delete", "-f", &watched]);

    assert_eq!(std::fs::read_dir(berth.root()).unwrap().count(), 0, "state left under the root");
    assert_eq!(mountinfo().symmetric_difference(&mounts).collect::<Vec<_>>(), Vec::<&String>::new(), "mounts changed");
    assert_eq!(
        cgroup_tree().symmetric_difference(&cgroups).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "cgroups changed"
    );
    assert_eq!(container_processes(&bin, &rootfs), Vec::<String>::new(), "processes left running");
    assert_eq!(container_fds[0], container_fds[1], "descriptors in the container grew");
    assert!(container_fds[0] <= 3, "the runtime leaked {} descriptors into the container", container_fds[0]);
}
