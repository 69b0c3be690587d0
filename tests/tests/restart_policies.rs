//! Restart policies (Docker's `--restart`) come from the supervisor berth runs under:
//! containerd 1.6's restart monitor restarting tasks of berth's shim labelled
//! `containerd.io/restart.status=running` (output to `restart.logpath` / `restart.loguri`,
//! stopped on purpose by relabelling), and podman's `--restart on-failure:N` and `always`
//! over `--runtime berth`. Each container counts its own starts in a bind-mounted file.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_tests::containerd::{Containerd, Setup};
use berth_tests::fixtures::TempDir;
use berth_tests::oci_image::{LayerDir, OciArchive};
use berth_tests::podman::Podman;
use berth_tests::privilege::{have_program, missing, require_root};

/// How often the test's restart monitor looks (containerd's default is 10 s).
const MONITOR: &str = "[plugins.\"io.containerd.internal.v1.restart\"]\n  interval = \"1s\"\n";
const STATUS: &str = "containerd.io/restart.status";

/// Appends a line to /data/starts, prints which start this is, then runs `then`.
fn counting_script(then: &str) -> String {
    format!("echo started >> /data/starts; echo \"start $(wc -l < /data/starts)\"; {then}")
}

/// Starts recorded in `dir/starts`.
fn starts(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("starts")).map(|s| s.lines().count()).unwrap_or(0)
}

/// Polls `what` every 100 ms until it holds, at most `limit`; panics with `context()` if not.
fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {limit:?}; {}", context());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `(pid, status)` of task `id` as `ctr task ls` shows it (`(0, "")` when there is none).
fn task(ctd: &Containerd, id: &str) -> (u32, String) {
    let out = String::from_utf8_lossy(&ctd.ctr(&["task", "ls"]).stdout).into_owned();
    out.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.len() == 3 && w[0] == id)
        .map(|w| (w[1].parse().unwrap_or(0), w[2].to_string()))
        .unwrap_or((0, String::new()))
}

/// One container's bind-mounted data directory and where its restarted output goes.
struct Supervised {
    id: &'static str,
    data: PathBuf,
}

impl Supervised {
    /// Its data directory lives in containerd's own, so it goes only after every task that
    /// could write to it (a restart the monitor began before the test ended included).
    fn new(ctd: &Containerd, id: &'static str) -> Supervised {
        let data = ctd.dir.path().join(format!("data-{id}"));
        std::fs::create_dir(&data).unwrap();
        Supervised { id, data }
    }

    fn log(&self) -> PathBuf {
        self.data.join("out.log")
    }

    /// `ctr run -d` (stdio discarded, /data bound to the data directory), then `labels` once
    /// the task runs: 1.6's monitor takes a task still in CREATED for a dead one and replaces
    /// it, racing ctr's own start, so the labels come after.
    fn run(&self, ctd: &Containerd, image: &str, labels: &[String]) {
        let mount = format!("type=bind,src={},dst=/data,options=rbind:rw", self.data.display());
        let script = counting_script("exec sleep 300");
        let shim = berth_tests::bins::bin("containerd-shim-berth-v2");
        let out = ctd.run_image(&shim, &["-d", "--null-io", "--mount", &mount], image, self.id, &["sh", "-c", &script]);
        assert!(out.status.success(), "ctr run {}: {}\n{}", self.id, String::from_utf8_lossy(&out.stderr), ctd.log());
        self.wait_started(ctd, 1, 0);
        let mut args = vec!["containers", "label", self.id];
        args.extend(labels.iter().map(String::as_str));
        let out = ctd.ctr(&args);
        assert!(out.status.success(), "ctr containers label {}: {}", self.id, String::from_utf8_lossy(&out.stderr));
    }

    /// Waits until the container has started `count` times and its task runs with a pid
    /// other than `old_pid`; returns that pid.
    fn wait_started(&self, ctd: &Containerd, count: usize, old_pid: u32) -> u32 {
        let mut pid = 0;
        wait_until(
            Duration::from_secs(30),
            &format!("{} should run (start {count}) with a new pid", self.id),
            || {
                let (now, status) = task(ctd, self.id);
                pid = now;
                status == "RUNNING" && now != old_pid && starts(&self.data) == count
            },
            || format!("starts {}, task {:?}\n{}", starts(&self.data), task(ctd, self.id), ctd.log()),
        );
        pid
    }

    /// SIGKILLs the task and waits for the monitor to run it again; returns the new pid.
    fn kill_and_wait_restart(&self, ctd: &Containerd, count: usize) -> u32 {
        let (old_pid, _) = task(ctd, self.id);
        ctd.kill_task(self.id);
        self.wait_started(ctd, count, old_pid)
    }

    fn is_stopped(&self, ctd: &Containerd) -> bool {
        matches!(task(ctd, self.id).1.as_str(), "STOPPED" | "")
    }
}

/// A private containerd with a 1 s restart monitor and a busybox image in its store.
fn containerd_with_monitor(test: &str) -> Option<(Containerd, OciArchive)> {
    if !require_root(test) {
        return None;
    }
    if !have_program("containerd") || !have_program("ctr") {
        missing(test, "Debian's containerd (make deps installs it)");
        return None;
    }
    let ctd = Containerd::start_setup(Setup { plugins: MONITOR.to_string(), ..Setup::default() });
    let plugins = String::from_utf8_lossy(&ctd.ctr(&["plugins", "ls"]).stdout).into_owned();
    assert!(
        plugins.lines().any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.first() == Some(&"io.containerd.internal.v1") && w.get(1) == Some(&"restart") && w.last() == Some(&"ok")
        }),
        "containerd's restart monitor is not loaded:\n{plugins}"
    );
    let image = OciArchive::build("berth.test/restart:latest", &[LayerDir::busybox()], &["sh"]);
    ctd.import(&image);
    Some((ctd, image))
}

#[test]
fn containerds_restart_monitor_restarts_a_killed_task_of_berths_shim() {
    let Some((ctd, image)) =
        containerd_with_monitor("containerds_restart_monitor_restarts_a_killed_task_of_berths_shim")
    else {
        return;
    };
    // Restarted tasks write to the file named by restart.logpath (a path, deprecated since
    // 1.5; 1.6 hands it to the shim as a file:// URI) or by restart.loguri.
    let by_path = Supervised::new(&ctd, "by-path");
    by_path.run(
        &ctd,
        &image.name,
        &[format!("{STATUS}=running"), format!("containerd.io/restart.logpath={}", by_path.log().display())],
    );
    let by_uri = Supervised::new(&ctd, "by-uri");
    by_uri.run(
        &ctd,
        &image.name,
        &[format!("{STATUS}=running"), format!("containerd.io/restart.loguri=file://{}", by_uri.log().display())],
    );

    for round in 2..=3 {
        for container in [&by_path, &by_uri] {
            container.kill_and_wait_restart(&ctd, round);
        }
    }
    // Each restart's output appended to the log, in order.
    for container in [&by_path, &by_uri] {
        let log = container.log();
        wait_until(
            Duration::from_secs(10),
            &format!("{} should log both restarts", container.id),
            || std::fs::read_to_string(&log).unwrap_or_default() == "start 2\nstart 3\n",
            || format!("{} has {:?}", log.display(), std::fs::read_to_string(&log)),
        );
    }

    // Stopped on purpose, the two ways a user does it: the label removed (an empty value)
    // before a kill, or relabelled `stopped` (the monitor then kills the task itself).
    let out = ctd.ctr(&["containers", "label", by_uri.id, &format!("{STATUS}=")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let info: serde_json::Value = serde_json::from_slice(&ctd.ctr(&["containers", "info", by_uri.id]).stdout).unwrap();
    assert_eq!(info["Labels"].get(STATUS), None, "the label should be gone: {}", info["Labels"]);
    let out = ctd.ctr(&["containers", "label", by_path.id, &format!("{STATUS}=stopped")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_until(
        Duration::from_secs(30),
        "the monitor should stop a task labelled stopped",
        || by_path.is_stopped(&ctd),
        || format!("task {:?}\n{}", task(&ctd, by_path.id), ctd.log()),
    );
    // The pass that stopped by-path began after by-uri lost its label (passes run one at a
    // time), so no pass that still saw the label is left to restart it once killed.
    ctd.kill_task(by_uri.id);

    // A witness still labelled running, killed after both stops: once the monitor has
    // restarted it, it has looked at the stopped two too, and left them alone.
    let witness = Supervised::new(&ctd, "witness");
    witness.run(&ctd, &image.name, &[format!("{STATUS}=running")]);
    witness.kill_and_wait_restart(&ctd, 2);
    for container in [&by_path, &by_uri] {
        assert!(container.is_stopped(&ctd), "{} was restarted: {:?}", container.id, task(&ctd, container.id));
        assert_eq!(starts(&container.data), 3, "{} started again", container.id);
    }
}

/// podman with a busybox image loaded from an oci-archive the test built.
fn podman_with_image(test: &str) -> Option<(Podman, OciArchive)> {
    if !require_root(test) {
        return None;
    }
    for program in ["podman", "conmon"] {
        if !have_program(program) {
            missing(test, &format!("Debian's {program} (make deps installs it)"));
            return None;
        }
    }
    let podman = Podman::private();
    let image = OciArchive::build("berth.test/restart:latest", &[LayerDir::busybox()], &["sh"]);
    podman.ok(&["load", "-q", "-i", image.path().to_str().unwrap()]);
    Some((podman, image))
}

fn inspect(podman: &Podman, name: &str, format: &str) -> String {
    podman.ok(&["inspect", "--format", format, name]).trim().to_string()
}

#[test]
fn podman_restarts_on_failure_as_many_times_as_asked_over_berth() {
    // Declared first, so dropped after podman has removed the container writing to it.
    let data = TempDir::new("berth-restart-data");
    let Some((podman, image)) = podman_with_image("podman_restarts_on_failure_as_many_times_as_asked_over_berth")
    else {
        return;
    };
    let volume = format!("{}:/data", data.path().display());
    let script = counting_script("exit 1");
    podman.ok(&podman.run_args(&[
        "-d",
        "--name",
        "failing",
        "--restart",
        "on-failure:3",
        "-v",
        &volume,
        &image.name,
        "sh",
        "-c",
        &script,
    ]));
    // Done once podman has given up: three restarts, the last exit kept.
    wait_until(
        Duration::from_secs(60),
        "podman should restart the failing container 3 times, then leave it exited",
        || inspect(&podman, "failing", "{{.RestartCount}} {{.State.Status}}") == "3 exited",
        || format!("inspect: {}, starts {}", inspect(&podman, "failing", "{{json .State}}"), starts(data.path())),
    );
    assert_eq!(inspect(&podman, "failing", "{{.State.ExitCode}}"), "1");
    assert_eq!(starts(data.path()), 4, "one run and three restarts");
    let logs = podman.ok(&["logs", "failing"]);
    assert!(logs.contains("start 4"), "{logs}");
}

#[test]
fn podman_restarts_always_until_stopped_over_berth() {
    // Declared first, so dropped after podman has removed the container writing to it.
    let data = TempDir::new("berth-restart-data");
    let Some((podman, image)) = podman_with_image("podman_restarts_always_until_stopped_over_berth") else { return };
    let volume = format!("{}:/data", data.path().display());
    // Exits 0 after a moment, except that its third start keeps running until stopped.
    let script = counting_script("[ $(wc -l < /data/starts) -ge 3 ] && exec sleep 300; sleep 0.2; exit 0");
    podman.ok(&podman.run_args(&[
        "-d",
        "--name",
        "always",
        "--restart",
        "always",
        "-v",
        &volume,
        &image.name,
        "sh",
        "-c",
        &script,
    ]));
    wait_until(
        Duration::from_secs(60),
        "podman should restart a container that exits 0 under --restart always",
        || inspect(&podman, "always", "{{.RestartCount}} {{.State.Status}}") == "2 running" && starts(data.path()) == 3,
        || format!("inspect: {}, starts {}", inspect(&podman, "always", "{{json .State}}"), starts(data.path())),
    );
    let (id, conmon) = (inspect(&podman, "always", "{{.Id}}"), inspect(&podman, "always", "{{.State.ConmonPid}}"));
    podman.ok(&["stop", "--time", "1", "always"]);
    // Restarts come from `podman container cleanup`, which conmon runs when the container
    // exits; once conmon and that cleanup are gone, nothing is left to restart it.
    wait_until(
        Duration::from_secs(30),
        "conmon and podman's cleanup should finish after podman stop",
        || !Path::new("/proc").join(&conmon).exists() && cleanups_of(&id).is_empty(),
        || format!("conmon {conmon}, cleanups {:?}", cleanups_of(&id)),
    );
    assert_eq!(inspect(&podman, "always", "{{.RestartCount}} {{.State.Status}}"), "2 exited");
    assert_eq!(starts(data.path()), 3, "started again after podman stop");
}

/// Pids of `podman container cleanup` processes for container `id`.
fn cleanups_of(id: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let words: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let is_cleanup = words.windows(2).any(|w| w == [b"container".as_slice(), b"cleanup".as_slice()]);
            (is_cleanup && words.contains(&id.as_bytes())).then_some(pid)
        })
        .collect()
}
