//! containerd (Debian's, started privately) runs containers through
//! containerd-shim-berth-v2 and berth: ctr's run, exec, kill, pause, ps, metrics, delete,
//! events, and berth's own errors reaching the ctr user.

use std::io::Read;
use std::process::Stdio;

use berth_tests::containerd::Containerd;
use berth_tests::fixtures::{write_busybox_rootfs, TempDir};
use berth_tests::privilege::{have_program, missing, require_root};

fn ready(test: &str) -> Option<(Containerd, TempDir)> {
    if !require_root(test) {
        return None;
    }
    if !have_program("containerd") || !have_program("ctr") {
        missing(test, "Debian's containerd (make deps installs it)");
        return None;
    }
    let rootfs = TempDir::new("berth-shim-rootfs");
    write_busybox_rootfs(rootfs.path());
    Some((Containerd::start(test), rootfs))
}

fn shim() -> String {
    berth_tests::bins::bin("containerd-shim-berth-v2").display().to_string()
}

/// `ctr run [extra] --runtime SHIM --runc-root R --fifo-dir F --rootfs ROOTFS ID ARGS...`,
/// with berth's state and ctr's fifos inside the test's private directory.
fn run_args(ctd: &Containerd, rootfs: &TempDir, extra: &[&str], id: &str, args: &[&str]) -> Vec<String> {
    let private = ctd.dir.path();
    let mut all = vec!["run".to_string()];
    all.extend(extra.iter().map(|s| s.to_string()));
    all.extend([
        "--runtime".to_string(),
        shim(),
        "--runc-root".to_string(),
        private.join("berth").display().to_string(),
        "--fifo-dir".to_string(),
        private.join("fifo").display().to_string(),
        "--rootfs".to_string(),
        rootfs.path().display().to_string(),
        id.to_string(),
    ]);
    all.extend(args.iter().map(|s| s.to_string()));
    all
}

fn ctr_run(ctd: &Containerd, rootfs: &TempDir, extra: &[&str], id: &str, args: &[&str]) -> std::process::Output {
    let all = run_args(ctd, rootfs, extra, id, args);
    ctd.ctr(&all.iter().map(String::as_str).collect::<Vec<_>>())
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn task_status(ctd: &Containerd, id: &str) -> String {
    let out = stdout(&ctd.ctr(&["task", "ls"]));
    out.lines().find(|l| l.split_whitespace().next() == Some(id)).and_then(|l| l.split_whitespace().nth(2)).unwrap_or("").to_string()
}

#[test]
fn ctr_runs_containers_through_the_shim() {
    let Some((ctd, rootfs)) = ready("ctr_runs_containers_through_the_shim") else { return };

    // Foreground run: stdout and the exit code come back through the shim.
    let out = ctr_run(&ctd, &rootfs, &["--rm"], "fg", &["sh", "-c", "echo hi from berth; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}\n{}", String::from_utf8_lossy(&out.stderr), ctd.log());
    assert_eq!(stdout(&out), "hi from berth\n");

    // Detached run, exec, ps, pause/resume, metrics, kill, delete.
    let out = ctr_run(&ctd, &rootfs, &["-d"], "bg", &["sleep", "300"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(task_status(&ctd, "bg"), "RUNNING");
    let fifos = ctd.dir.path().join("fifo").display().to_string();
    let out = ctd.ctr(&["task", "exec", "--fifo-dir", &fifos, "--exec-id", "e1", "bg", "sh", "-c", "echo in-exec; exit 5"]);
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(5), "in-exec\n"));
    let ps = stdout(&ctd.ctr(&["task", "ps", "bg"]));
    assert_eq!(ps.lines().count(), 2, "{ps}");
    assert!(ctd.ctr(&["task", "pause", "bg"]).status.success());
    assert_eq!(task_status(&ctd, "bg"), "PAUSED");
    assert!(ctd.ctr(&["task", "resume", "bg"]).status.success());
    assert_eq!(task_status(&ctd, "bg"), "RUNNING");
    let metrics = stdout(&ctd.ctr(&["task", "metrics", "bg"]));
    assert!(metrics.contains("memory.usage_in_bytes"), "{metrics}");
    assert!(ctd.ctr(&["task", "kill", "-s", "KILL", "bg"]).status.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while task_status(&ctd, "bg") != "STOPPED" {
        assert!(std::time::Instant::now() < deadline, "task never stopped");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(ctd.ctr(&["task", "delete", "bg"]).status.success());
    assert!(ctd.ctr(&["containers", "delete", "bg"]).status.success());
    assert_eq!(task_status(&ctd, "bg"), "");
}

#[test]
fn berths_error_reaches_the_ctr_user() {
    let Some((ctd, rootfs)) = ready("berths_error_reaches_the_ctr_user") else { return };
    let out = ctr_run(&ctd, &rootfs, &["--rm"], "broken", &["/no/such/program"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot create container broken") && stderr.contains("/no/such/program"), "{stderr}");
}

#[test]
fn events_come_in_containerds_order() {
    let Some((ctd, rootfs)) = ready("events_come_in_containerds_order") else { return };
    let mut events = ctd.command(&["events"]).stdout(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = ctr_run(&ctd, &rootfs, &["-d"], "ev", &["sleep", "300"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let fifos = ctd.dir.path().join("fifo").display().to_string();
    let exec = ctd.ctr(&["task", "exec", "--fifo-dir", &fifos, "--exec-id", "x1", "ev", "true"]);
    assert!(exec.status.success());
    assert!(ctd.ctr(&["task", "kill", "-s", "KILL", "ev"]).status.success());
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(ctd.ctr(&["task", "delete", "ev"]).status.success());
    std::thread::sleep(std::time::Duration::from_millis(300));
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(events.id() as i32), nix::sys::signal::SIGTERM);
    let mut text = String::new();
    events.stdout.take().unwrap().read_to_string(&mut text).unwrap();
    let _ = events.wait();
    let topics: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("/tasks/")))
        .collect();
    let position = |topic: &str| topics.iter().position(|t| *t == topic).unwrap_or_else(|| panic!("no {topic} in {topics:?}"));
    assert!(position("/tasks/create") < position("/tasks/start"), "{topics:?}");
    assert!(position("/tasks/exec-added") < position("/tasks/exec-started"), "{topics:?}");
    // The exec's exit comes before the init's, and delete comes last.
    let exits: Vec<usize> = topics.iter().enumerate().filter(|(_, t)| **t == "/tasks/exit").map(|(i, _)| i).collect();
    assert_eq!(exits.len(), 2, "{topics:?}");
    assert!(position("/tasks/exec-started") < exits[0], "{topics:?}");
    assert!(position("/tasks/start") < exits[1] && exits[1] < position("/tasks/delete"), "{topics:?}");
}
