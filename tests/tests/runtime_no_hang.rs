//! No lost exits, no lost signals: a thousand foreground `run`s and two hundred foreground
//! `exec`s of a process that exits at once each end (none hangs), and a SIGTERM sent to a
//! foreground `run` or `exec` while it is still setting up reaches the container's process;
//! every container is removed and nothing is left behind.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use berth_tests::fixtures::{container_id, Bundle, TempDir};
use berth_tests::privilege::require_root;
use berth_tests::runtime::{cgroup_mounts, Berth};

/// How long one foreground `run` or `exec` may take before it counts as hung.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Waits for `child` up to `TIMEOUT`; on timeout kills it (by its pid) and fails naming `what`
/// with its stderr (written to `stderr_file`).
fn wait_or_fail(mut child: Child, what: &str, stderr_file: &Path) -> ExitStatus {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = std::fs::read_to_string(stderr_file).unwrap_or_default();
            panic!("{what} hung: no exit after {TIMEOUT:?}; killed it; its stderr: {stderr}");
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Runs `berth ARGS` with stderr to a file, failing the test if it hangs.
fn berth_with_timeout(berth: &Berth, args: &[&str], what: &str, io: &TempDir) -> (ExitStatus, String) {
    let stderr_file = io.path().join("stderr");
    let child = berth
        .command(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_file).unwrap())
        .spawn()
        .expect("cannot run berth");
    let status = wait_or_fail(child, what, &stderr_file);
    (status, std::fs::read_to_string(&stderr_file).unwrap_or_default())
}

/// The container's cgroup directories still present in any hierarchy.
fn cgroups_left(bundle: &Bundle) -> Vec<String> {
    let relative = bundle.cgroups_path().trim_start_matches('/').to_string();
    cgroup_mounts().iter().map(|m| m.join(&relative)).filter(|p| p.exists()).map(|p| p.display().to_string()).collect()
}

/// Mounts on the host that name the bundle (its rootfs or anything under it).
fn mounts_left(bundle: &Bundle) -> Vec<String> {
    let bundle = bundle.path().to_str().unwrap().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&bundle))
        .map(String::from)
        .collect()
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

fn state_left(berth: &Berth) -> Vec<String> {
    dir_entries(berth.root())
}

fn assert_nothing_left(berth: &Berth, bundle: &Bundle, after: &str) {
    assert_eq!(state_left(berth), Vec::<String>::new(), "container state left under the root after {after}");
    assert_eq!(cgroups_left(bundle), Vec::<String>::new(), "cgroups left after {after}");
    assert_eq!(mounts_left(bundle), Vec::<String>::new(), "mounts left after {after}");
}

/// The pids of the processes in a running container, as `berth ps --format json` lists them.
fn container_pids(berth: &Berth, id: &str) -> Vec<i64> {
    let pids: serde_json::Value = serde_json::from_str(&berth.ok(&["ps", "--format", "json", id])).unwrap();
    pids.as_array().unwrap().iter().map(|p| p.as_i64().unwrap()).collect()
}

/// A detached container running `sleep 600` for execs to go into, with its own state root
/// and a scratch directory for the execs' stderr.
struct Sleeper {
    bundle: Bundle,
    berth: Berth,
    io: TempDir,
    id: String,
    /// The container's processes before any exec.
    init: Vec<i64>,
}

impl Sleeper {
    fn start(name: &str) -> Sleeper {
        let bundle = Bundle::busybox(name, &["sleep", "600"]);
        let berth = Berth::new(name);
        let io = TempDir::new(&format!("berth-{name}-io"));
        let id = container_id(name);
        berth.ok(&["run", "-d", "--bundle", bundle.path().to_str().unwrap(), &id]);
        let init = container_pids(&berth, &id);
        Sleeper { bundle, berth, io, id, init }
    }

    /// Deletes the container and asserts nothing of it is left.
    fn remove(self, after: &str) {
        self.berth.ok(&["delete", "--force", &self.id]);
        assert_nothing_left(&self.berth, &self.bundle, after);
    }
}

#[test]
fn a_thousand_foreground_runs_of_true_all_exit() {
    if !require_root("a_thousand_foreground_runs_of_true_all_exit") {
        return;
    }
    let bundle = Bundle::busybox("nohang-run", &["/bin/true"]);
    let berth = Berth::new("nohang-run");
    let io = TempDir::new("berth-nohang-run-io");
    let bundle_path = bundle.path().to_str().unwrap();
    for n in 0..1000 {
        let id = container_id(&format!("nohang-run-{n}"));
        let what = format!("foreground run {n} of /bin/true ({id})");
        let (status, stderr) = berth_with_timeout(&berth, &["run", "--bundle", bundle_path, &id], &what, &io);
        assert_eq!(status.code(), Some(0), "{what} ended with {status}: {stderr}");
        assert_eq!(state_left(&berth), Vec::<String>::new(), "{what} left its state behind");
    }
    assert_nothing_left(&berth, &bundle, "1000 foreground runs");
}

#[test]
fn two_hundred_foreground_execs_of_true_all_exit() {
    if !require_root("two_hundred_foreground_execs_of_true_all_exit") {
        return;
    }
    let sleeper = Sleeper::start("nohang-exec");
    let (berth, io, id, init) = (&sleeper.berth, &sleeper.io, sleeper.id.as_str(), &sleeper.init);
    let files = dir_entries(&berth.root().join(id));
    for n in 0..200 {
        let what = format!("foreground exec {n} of /bin/true into {id}");
        let (status, stderr) = berth_with_timeout(berth, &["exec", id, "/bin/true"], &what, io);
        assert_eq!(status.code(), Some(0), "{what} ended with {status}: {stderr}");
    }
    assert_eq!(container_pids(berth, id), *init, "processes left in the container after 200 execs");
    assert_eq!(dir_entries(&berth.root().join(id)), files, "the execs left files in the container's state directory");
    sleeper.remove("200 foreground execs");
}

/// Sends SIGTERM to a foreground berth `delay` after starting it, and returns how it ended:
/// killed by the signal before it could block it (nothing may exist yet then), or 143, the
/// code of a container process the forwarded signal killed.
fn terminate_early(berth: &Berth, args: &[&str], delay: Duration, what: &str, io: &TempDir) -> ExitStatus {
    let stderr_file = io.path().join("stderr");
    let child = berth
        .command(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_file).unwrap())
        .spawn()
        .expect("cannot run berth");
    std::thread::sleep(delay);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = wait_or_fail(child, what, &stderr_file);
    let stderr = std::fs::read_to_string(&stderr_file).unwrap_or_default();
    assert!(
        status.code() == Some(143) || status.signal() == Some(libc::SIGTERM),
        "{what}: SIGTERM did not end the container's process: berth ended with {status}: {stderr}"
    );
    status
}

/// Delays from at once to well past a debug build's setup, so the signal lands in every phase.
fn delays() -> impl Iterator<Item = Duration> {
    (0..40).map(|n| Duration::from_micros(n * 1500))
}

#[test]
fn sigterm_during_a_foreground_run_setup_reaches_the_container() {
    if !require_root("sigterm_during_a_foreground_run_setup_reaches_the_container") {
        return;
    }
    let mut bundle = Bundle::busybox("nohang-run-term", &["sleep", "30"]);
    // Not its own pid namespace's init, which the kernel shields from signals it has no
    // handler for: the default action of SIGTERM ends it.
    let namespaces = bundle.spec["linux"]["namespaces"].as_array_mut().unwrap();
    namespaces.retain(|ns| ns["type"] != "pid");
    bundle.write_spec();
    let berth = Berth::new("nohang-run-term");
    let io = TempDir::new("berth-nohang-run-term-io");
    let bundle_path = bundle.path().to_str().unwrap();
    let mut forwarded = 0;
    for (n, delay) in delays().enumerate() {
        let id = container_id(&format!("nohang-run-term-{n}"));
        let what = format!("foreground run {n} of sleep 30 ({id}) sent SIGTERM after {delay:?}");
        let status = terminate_early(&berth, &["run", "--bundle", bundle_path, &id], delay, &what, &io);
        forwarded += usize::from(status.code() == Some(143));
        assert_eq!(state_left(&berth), Vec::<String>::new(), "{what} left the container behind");
        assert_eq!(cgroups_left(&bundle), Vec::<String>::new(), "{what} left its cgroups behind");
    }
    assert!(forwarded > 0, "no SIGTERM was forwarded to a container: every run died of it before setting up");
    assert_nothing_left(&berth, &bundle, "terminated runs");
}

#[test]
fn sigterm_during_a_foreground_exec_setup_reaches_the_process() {
    if !require_root("sigterm_during_a_foreground_exec_setup_reaches_the_process") {
        return;
    }
    let sleeper = Sleeper::start("nohang-exec-term");
    let (berth, io, id, init) = (&sleeper.berth, &sleeper.io, sleeper.id.as_str(), &sleeper.init);
    let mut forwarded = 0;
    for (n, delay) in delays().enumerate() {
        let what = format!("foreground exec {n} of sleep 30 into {id} sent SIGTERM after {delay:?}");
        let status = terminate_early(berth, &["exec", id, "sleep", "30"], delay, &what, io);
        forwarded += usize::from(status.code() == Some(143));
        assert_eq!(container_pids(berth, id), *init, "{what} left its process running in the container");
    }
    assert!(forwarded > 0, "no SIGTERM was forwarded to an exec'd process: every exec died of it before setting up");
    sleeper.remove("terminated execs");
}
