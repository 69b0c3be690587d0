//! containerd (Debian's, started privately) runs containers through
//! containerd-shim-berth-v2 and berth: ctr's run, exec, kill, pause, ps, metrics, delete,
//! events, and berth's own errors reaching the ctr user.

use std::io::Read;
use std::process::Stdio;

use berth_tests::containerd::{mounts_below, Containerd};
use berth_tests::fixtures::{write_busybox_rootfs, TempDir};
use berth_tests::oci_image::{LayerDir, OciArchive};
use berth_tests::privilege::{have_program, missing, require_root};

/// A private containerd, when the test can have one.
fn containerd_ready(test: &str) -> Option<Containerd> {
    if !require_root(test) {
        return None;
    }
    if !have_program("containerd") || !have_program("ctr") {
        missing(test, "Debian's containerd (make deps installs it)");
        return None;
    }
    Some(Containerd::start())
}

/// A private containerd and a busybox directory for `ctr run --rootfs`.
fn ready(test: &str) -> Option<(Containerd, TempDir)> {
    let ctd = containerd_ready(test)?;
    let rootfs = TempDir::new("berth-shim-rootfs");
    write_busybox_rootfs(rootfs.path());
    Some((ctd, rootfs))
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

/// `ctr run [extra] --runtime SHIM --runc-root R --fifo-dir F IMAGE ID ARGS...`: a container
/// from an image in containerd's store, its rootfs the snapshotter's mounts.
fn ctr_run_image(ctd: &Containerd, extra: &[&str], image: &str, id: &str, args: &[&str]) -> std::process::Output {
    ctd.run_image(std::path::Path::new(shim_path()), extra, image, id, args)
}

fn shim_path() -> &'static str {
    static SHIM: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SHIM.get_or_init(shim)
}

/// Runs `image` the ways a containerd user does, with `script` printing `expected`: in the
/// foreground with --rm (output and exit code come back), and detached with an exec, a kill
/// and a delete, through containerd's default (overlayfs) snapshotter. While the detached
/// task runs, its rootfs is one overlay mount, and `while_running` gets its id; after each
/// run nothing stays mounted in the task's bundle.
fn run_image_both_ways(
    ctd: &Containerd,
    image: &OciArchive,
    id: &str,
    script: &str,
    expected: &str,
    while_running: impl Fn(&str),
) {
    let fg = format!("{id}-fg");
    let out = ctr_run_image(ctd, &["--rm"], &image.name, &fg, &["sh", "-c", &format!("{script}; exit 3")]);
    assert_eq!(out.status.code(), Some(3), "{}\n{}", String::from_utf8_lossy(&out.stderr), ctd.log());
    assert_eq!(stdout(&out), expected);
    assert_eq!(mounts_below(&ctd.bundle(&fg)), vec![], "the rootfs of {fg} stays mounted");

    let bg = format!("{id}-bg");
    let out = ctr_run_image(ctd, &["-d"], &image.name, &bg, &["sleep", "300"]);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), ctd.log());
    let bundle = ctd.bundle(&bg);
    assert_eq!(mounts_below(&bundle), vec![(bundle.join("rootfs"), "overlay".to_string())]);
    while_running(&bg);
    let fifos = ctd.dir.path().join("fifo").display().to_string();
    let out = ctd.ctr(&[
        "task",
        "exec",
        "--fifo-dir",
        &fifos,
        "--exec-id",
        "e1",
        &bg,
        "sh",
        "-c",
        &format!("{script}; exit 5"),
    ]);
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(5), expected),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ctd.kill_task(&bg);
    assert!(ctd.ctr(&["task", "delete", &bg]).status.success());
    assert!(ctd.ctr(&["containers", "delete", &bg]).status.success());
    assert_eq!(mounts_below(&bundle), vec![], "the rootfs of {bg} stays mounted after delete");
}

#[test]
fn ctr_runs_an_image_from_its_store_through_the_shim() {
    let Some(ctd) = containerd_ready("ctr_runs_an_image_from_its_store_through_the_shim") else { return };
    let image = OciArchive::build(
        "berth.test/one-layer:latest",
        &[LayerDir::busybox().file("etc/motd", "from the image")],
        &["sh"],
    );
    ctd.import(&image);
    // The overlayfs snapshotter (containerd's default) sends an overlay.
    run_image_both_ways(
        &ctd,
        &image,
        "one",
        "cat /etc/motd; echo; echo written > /tmp/f; cat /tmp/f",
        "from the image\nwritten\n",
        |_| {},
    );
    // The native snapshotter sends a bind mount of a copy.
    let out = ctr_run_image(
        &ctd,
        &["--rm", "--snapshotter", "native"],
        &image.name,
        "native",
        &["sh", "-c", "cat /etc/motd; exit 4"],
    );
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(4), "from the image"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mounts_below(&ctd.bundle("native")), vec![]);
}

#[test]
fn whiteouts_of_upper_layers_hide_lower_files_in_the_container() {
    let Some(ctd) = containerd_ready("whiteouts_of_upper_layers_hide_lower_files_in_the_container") else { return };
    let layers = [
        LayerDir::busybox().file("data/gone", "gone").file("data/kept", "kept").file("opaque/old", "old"),
        // A file deleted, and a directory made opaque with new content.
        LayerDir::new().whiteout("data/gone").opaque("opaque").file("opaque/new", "new"),
        LayerDir::new().file("data/added", "added"),
    ];
    let image = OciArchive::build("berth.test/whiteouts:latest", &layers, &["sh"]);
    ctd.import(&image);
    let script = "ls /data; echo --; ls /opaque; test -e /data/gone || echo gone-is-gone; test -e /opaque/old || echo old-is-hidden";
    run_image_both_ways(&ctd, &image, "wh", script, "added\nkept\n--\nnew\ngone-is-gone\nold-is-hidden\n", |_| {});
}

#[test]
fn an_image_whose_overlay_options_exceed_a_page_runs() {
    let Some(ctd) = containerd_ready("an_image_whose_overlay_options_exceed_a_page_runs") else { return };
    const LAYERS: usize = 60;
    let mut layers = vec![LayerDir::busybox()];
    layers.extend((1..LAYERS).map(|n| LayerDir::new().file(&format!("layers/{n:02}"), &format!("{n}"))));
    let image = OciArchive::build("berth.test/many-layers:latest", &layers, &["sh"]);
    ctd.import(&image);
    // What containerd hands the shim for the running task: one overlay whose options are
    // longer than the page mount(2) takes.
    let check_options = |id: &str| {
        let out = ctd.ctr(&["snapshots", "mounts", "/mnt", id]);
        let text = stdout(&out);
        let options = text
            .lines()
            .find(|l| l.starts_with("mount -t overlay"))
            .and_then(|l| l.split_once(" -o "))
            .map(|(_, o)| o.trim())
            .unwrap_or_else(|| panic!("no overlay in {text:?}"));
        assert_eq!(options.split_once("lowerdir=").map(|(_, dirs)| dirs.split(':').count()), Some(LAYERS), "{options}");
        assert!(options.len() > 4096, "the overlay options are only {} bytes", options.len());
    };
    let script = "ls /layers | wc -l; cat /layers/01 /layers/59; echo";
    run_image_both_ways(&ctd, &image, "many", script, &format!("{}\n159\n", LAYERS - 1), check_options);
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn task_status(ctd: &Containerd, id: &str) -> String {
    ctd.task_status(id)
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
    let out =
        ctd.ctr(&["task", "exec", "--fifo-dir", &fifos, "--exec-id", "e1", "bg", "sh", "-c", "echo in-exec; exit 5"]);
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(5), "in-exec\n"));
    let ps = stdout(&ctd.ctr(&["task", "ps", "bg"]));
    assert_eq!(ps.lines().count(), 2, "{ps}");
    assert!(ctd.ctr(&["task", "pause", "bg"]).status.success());
    assert_eq!(task_status(&ctd, "bg"), "PAUSED");
    assert!(ctd.ctr(&["task", "resume", "bg"]).status.success());
    assert_eq!(task_status(&ctd, "bg"), "RUNNING");
    let metrics = stdout(&ctd.ctr(&["task", "metrics", "bg"]));
    assert!(metrics.contains("memory.usage_in_bytes"), "{metrics}");
    // Checkpointing is not offered through the shim: a clear refusal, the task runs on.
    let out = ctd.ctr(&["task", "checkpoint", "bg"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not implemented"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(task_status(&ctd, "bg"), "RUNNING");
    ctd.kill_task("bg");
    assert_eq!(task_status(&ctd, "bg"), "STOPPED");
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
    let topics: Vec<&str> =
        text.lines().filter_map(|l| l.split_whitespace().find(|w| w.starts_with("/tasks/"))).collect();
    let position =
        |topic: &str| topics.iter().position(|t| *t == topic).unwrap_or_else(|| panic!("no {topic} in {topics:?}"));
    assert!(position("/tasks/create") < position("/tasks/start"), "{topics:?}");
    assert!(position("/tasks/exec-added") < position("/tasks/exec-started"), "{topics:?}");
    // The exec's exit comes before the init's, and delete comes last.
    let exits: Vec<usize> = topics.iter().enumerate().filter(|(_, t)| **t == "/tasks/exit").map(|(i, _)| i).collect();
    assert_eq!(exits.len(), 2, "{topics:?}");
    assert!(position("/tasks/exec-started") < exits[0], "{topics:?}");
    assert!(position("/tasks/start") < exits[1] && exits[1] < position("/tasks/delete"), "{topics:?}");
}

fn ctr_on_a_pty(ctd: &Containerd, args: &[String], rows: u16, cols: u16) -> (String, Option<i32>) {
    berth_tests::pty::run_on_a_pty(ctd.command(&args.iter().map(String::as_str).collect::<Vec<_>>()), rows, cols)
}

#[test]
fn terminals_through_the_shim() {
    let Some((ctd, rootfs)) = ready("terminals_through_the_shim") else { return };
    let script = "sleep 0.3; stty size; tty; exit 4";
    let args = run_args(&ctd, &rootfs, &["--rm", "-t"], "tty", &["sh", "-c", script]);
    let (output, code) = ctr_on_a_pty(&ctd, &args, 31, 97);
    assert_eq!(code, Some(4), "{output:?}");
    assert!(output.contains("31 97") && output.contains("/dev/pts/0"), "{output:?}");

    assert!(ctr_run(&ctd, &rootfs, &["-d"], "ttyexec", &["sleep", "300"]).status.success());
    let fifos = ctd.dir.path().join("fifo").display().to_string();
    let exec: Vec<String> =
        ["task", "exec", "-t", "--fifo-dir", &fifos, "--exec-id", "t1", "ttyexec", "sh", "-c", script]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let (output, code) = ctr_on_a_pty(&ctd, &exec, 22, 66);
    assert_eq!(code, Some(4), "{output:?}");
    assert!(output.contains("22 66") && output.contains("/dev/pts/"), "{output:?}");
}

#[test]
fn log_uris_and_stdin_eof() {
    let Some((ctd, rootfs)) = ready("log_uris_and_stdin_eof") else { return };
    // file://: stdout and stderr appended to a file.
    let log = ctd.dir.path().join("logs/out.log");
    let uri = format!("file://{}", log.display());
    let out = ctr_run(
        &ctd,
        &rootfs,
        &["--rm", "--log-uri", &uri],
        "filelog",
        &["sh", "-c", "echo to-stdout; echo to-stderr >&2"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("to-stdout") && text.contains("to-stderr"), "{text:?}");

    // binary://: containerd's logger protocol (fds 3 and 4, readiness on fd 5).
    let logger = ctd.dir.path().join("logger.sh");
    let captured = ctd.dir.path().join("captured");
    std::fs::write(
        &logger,
        format!("#!/bin/sh\nexec 5>&-\ncat <&3 > {0}.out &\ncat <&4 > {0}.err\nwait\n", captured.display()),
    )
    .unwrap();
    std::fs::set_permissions(&logger, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let uri = format!("binary://{}", logger.display());
    let out = ctr_run(
        &ctd,
        &rootfs,
        &["--rm", "--log-uri", &uri],
        "binlog",
        &["sh", "-c", "echo via-logger; echo err-via-logger >&2"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let read = |suffix: &str| std::fs::read_to_string(format!("{}.{suffix}", captured.display())).unwrap_or_default();
    while !(read("out").contains("via-logger") && read("err").contains("err-via-logger")) {
        assert!(std::time::Instant::now() < deadline, "logger got {:?} {:?}", read("out"), read("err"));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // stdin: the process reads what ctr is given and sees EOF after it.
    let all = run_args(&ctd, &rootfs, &["--rm"], "stdin", &["sh", "-c", "cat; echo after-eof"]);
    let mut child = ctd
        .command(&all.iter().map(String::as_str).collect::<Vec<_>>())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"piped-in\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "piped-in\nafter-eof\n");
}

/// The pid of the shim process serving container `id`.
fn shim_pid(id: &str) -> Option<i32> {
    let shim = std::fs::canonicalize(berth_tests::bins::bin("containerd-shim-berth-v2")).unwrap();
    std::fs::read_dir("/proc").unwrap().flatten().find_map(|entry| {
        let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
        let exe = std::fs::read_link(entry.path().join("exe")).ok()?;
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        // The serving shim is the fork of `start` (which has exited once containerd has its
        // address), so it keeps `start`'s command line.
        let serving =
            args.windows(2).any(|w| w[0] == b"-id" && w[1] == id.as_bytes()) && args.iter().any(|a| *a == b"start");
        (exe == shim && serving).then_some(pid)
    })
}

#[test]
fn a_killed_shim_is_cleaned_up_and_a_restarted_containerd_reconnects() {
    let Some((mut ctd, rootfs)) = ready("a_killed_shim_is_cleaned_up_and_a_restarted_containerd_reconnects") else {
        return;
    };
    // containerd restarts: the running task is still there and answers.
    assert!(ctr_run(&ctd, &rootfs, &["-d"], "survivor", &["sleep", "300"]).status.success());
    ctd.restart();
    assert_eq!(task_status(&ctd, "survivor"), "RUNNING");
    let fifos = ctd.dir.path().join("fifo").display().to_string();
    let out = ctd.ctr(&["task", "exec", "--fifo-dir", &fifos, "--exec-id", "after", "survivor", "echo", "still-here"]);
    assert_eq!(stdout(&out), "still-here\n", "{}", String::from_utf8_lossy(&out.stderr));
    // The shim's events reach the new containerd: the task's exit is published to it.
    let mut events = ctd.watch_events();
    std::thread::sleep(std::time::Duration::from_millis(300)); // ctr subscribes
    assert!(ctd.ctr(&["task", "kill", "-s", "KILL", "survivor"]).status.success());
    let exit = events.wait_for("/tasks/exit", "survivor");
    assert!(exit.contains("\"exit_status\":137"), "{exit}");
    drop(events);
    assert_eq!(task_status(&ctd, "survivor"), "STOPPED");

    // A shim killed with SIGKILL: `task delete` runs the shim's delete subcommand, which
    // removes the container and its processes.
    assert!(ctr_run(&ctd, &rootfs, &["-d"], "orphan", &["sleep", "300"]).status.success());
    let init: i32 = stdout(&ctd.ctr(&["task", "ls"]))
        .lines()
        .find(|l| l.starts_with("orphan"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let shim = shim_pid("orphan").expect("no shim serves the container");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(shim), nix::sys::signal::SIGKILL).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let _ = ctd.ctr(&["task", "delete", "--force", "orphan"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{init}")).exists()
        && !std::fs::read_to_string(format!("/proc/{init}/stat")).unwrap_or_default().contains(") Z ")
    {
        assert!(std::time::Instant::now() < deadline, "the orphaned container's process {init} survives");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(task_status(&ctd, "orphan"), "");
}

#[test]
fn an_oom_killed_task_reports_oom_before_its_exit() {
    let Some((ctd, rootfs)) = ready("an_oom_killed_task_reports_oom_before_its_exit") else { return };
    let mut events = ctd.command(&["events"]).stdout(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = ctr_run(
        &ctd,
        &rootfs,
        &["--rm", "--memory-limit", "16777216"],
        "oom",
        &["sh", "-c", "x=$(head -c 64000000 /dev/zero | tr '\\0' a)"],
    );
    assert_eq!(out.status.code(), Some(137), "{}", String::from_utf8_lossy(&out.stderr));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(events.id() as i32), nix::sys::signal::SIGTERM);
    let mut text = String::new();
    events.stdout.take().unwrap().read_to_string(&mut text).unwrap();
    let _ = events.wait();
    let topics: Vec<&str> =
        text.lines().filter_map(|l| l.split_whitespace().find(|w| w.starts_with("/tasks/"))).collect();
    let oom = topics.iter().position(|t| *t == "/tasks/oom").unwrap_or_else(|| panic!("no OOM event: {topics:?}"));
    let exit = topics.iter().position(|t| *t == "/tasks/exit").unwrap();
    assert!(oom < exit, "{topics:?}");
}

#[test]
fn an_exit_racing_start_is_published_after_start() {
    let Some((ctd, rootfs)) = ready("an_exit_racing_start_is_published_after_start") else { return };
    let mut events = ctd.command(&["events"]).stdout(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    // `true` exits at once, often before Start has returned to containerd.
    for n in 0..5 {
        let id = format!("race{n}");
        assert!(ctr_run(&ctd, &rootfs, &["-d"], &id, &["true"]).status.success());
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(events.id() as i32), nix::sys::signal::SIGTERM);
    let mut text = String::new();
    events.stdout.take().unwrap().read_to_string(&mut text).unwrap();
    let _ = events.wait();
    for n in 0..5 {
        let id = format!("\"race{n}\"");
        let topics: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(&id))
            .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("/tasks/")))
            .collect();
        let start = topics.iter().position(|t| *t == "/tasks/start").unwrap_or_else(|| panic!("race{n}: {topics:?}"));
        let exit =
            topics.iter().position(|t| *t == "/tasks/exit").unwrap_or_else(|| panic!("race{n}: exit lost: {topics:?}"));
        assert!(start < exit, "race{n}: {topics:?}");
    }
}

/// The threads of a running shim process.
fn thread_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn a_shim_serves_detached_containers_on_at_most_three_threads() {
    let Some((ctd, rootfs)) = ready("a_shim_serves_detached_containers_on_at_most_three_threads") else { return };
    for n in 0..3 {
        let out = ctr_run(&ctd, &rootfs, &["-d"], &format!("lean{n}"), &["sleep", "300"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let fifos = ctd.dir.path().join("fifo").display().to_string();
    assert_eq!(
        stdout(&ctd.ctr(&["task", "exec", "--fifo-dir", &fifos, "--exec-id", "e", "lean0", "echo", "ok"])),
        "ok\n"
    );
    for n in 0..3 {
        let pid = shim_pid(&format!("lean{n}")).expect("no shim serves the container");
        let threads = thread_count(pid);
        assert!((1..=3).contains(&threads), "the shim of lean{n} runs {threads} threads");
    }
}

#[test]
fn runc_options_from_containerd_are_honoured() {
    if !require_root("runc_options_from_containerd_are_honoured") {
        return;
    }
    // containerd resolves io.containerd.runc.v2 through its PATH: here to berth's shim, so
    // ctr sends runc's options (BinaryName, Root, SystemdCgroup) to it.
    let shims = TempDir::new("berth-shims");
    std::os::unix::fs::symlink(
        berth_tests::bins::bin("containerd-shim-berth-v2"),
        shims.path().join("containerd-shim-runc-v2"),
    )
    .unwrap();
    let calls = shims.path().join("calls.log");
    let wrapper = shims.path().join("berth-wrapper");
    let berth = berth_tests::bins::bin("berth");
    write_script(&wrapper, &format!("echo \"$@\" >> {}\nexec {} \"$@\"", calls.display(), berth.display()));
    // A runtime that hangs in create, to show the shim's call timeout.
    let hanging = shims.path().join("berth-hanging");
    let hung_pid = shims.path().join("hung.pid");
    write_script(
        &hanging,
        &format!(
            "case \"$*\" in *\" create \"*) echo $$ > {}; exec sleep 600;; esac\nexec {} \"$@\"",
            hung_pid.display(),
            berth.display()
        ),
    );
    let rootfs = TempDir::new("berth-shim-rootfs");
    write_busybox_rootfs(rootfs.path());
    let ctd = Containerd::start_with(Some(shims.path()), &[("BERTH_SHIM_CALL_TIMEOUT", "3")]);
    let root = ctd.dir.path().join("custom-root");
    let fifos = ctd.dir.path().join("fifo");
    let run_with = |binary: &std::path::Path, id: &str, extra: &[&str]| {
        let mut args = vec![
            "run",
            "--rm",
            "--runtime",
            "io.containerd.runc.v2",
            "--runc-binary",
            binary.to_str().unwrap(),
            "--runc-root",
            root.to_str().unwrap(),
            "--fifo-dir",
            fifos.to_str().unwrap(),
        ];
        args.extend(extra);
        args.extend(["--rootfs", rootfs.path().to_str().unwrap(), id, "sh", "-c", "echo via-options"]);
        ctd.ctr(&args)
    };
    let run = |id: &str, extra: &[&str]| run_with(&wrapper, id, extra);
    let out = run("opts", &[]);
    assert_eq!(stdout(&out), "via-options\n", "{}\n{}", String::from_utf8_lossy(&out.stderr), ctd.log());
    let logged = std::fs::read_to_string(&calls).unwrap();
    assert!(
        logged.lines().any(|l| l.starts_with(&format!("--root {} ", root.display())) && l.contains("create")),
        "{logged}"
    );
    assert!(!logged.contains("--systemd-cgroup"), "{logged}");

    // SystemdCgroup reaches berth as --systemd-cgroup (on a v1 host berth refuses it, and
    // its own message reaches the ctr user).
    let out = run("opts-systemd", &["--runc-systemd-cgroup", "--cgroup", "system.slice:berth-test:opts-systemd"]);
    let logged = std::fs::read_to_string(&calls).unwrap();
    assert!(
        logged.lines().any(|l| l.contains("--systemd-cgroup") && l.contains("create")),
        "{logged}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("--systemd-cgroup with cgroupsPath \"system.slice:berth-test:opts-systemd\""),
            "{stderr}"
        );
    }

    // A hung runtime call is killed after the timeout and the request fails with that.
    let out = run_with(&hanging, "hung", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("berth create timed out after 3s"), "{stderr}");
    let pid = std::fs::read_to_string(&hung_pid).unwrap().trim().to_string();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(stat.is_empty() || stat.contains(") Z "), "the hung runtime {pid} still runs: {stat}");
}

fn write_script(path: &std::path::Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

#[test]
fn containers_of_one_pod_share_one_shim() {
    let Some((ctd, rootfs)) = ready("containers_of_one_pod_share_one_shim") else { return };
    let pod = "io.kubernetes.cri.sandbox-id=pod-a";
    for id in ["pod-a", "pod-a-app"] {
        let out = ctr_run(&ctd, &rootfs, &["-d", "--annotation", pod], id, &["sleep", "300"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let out = ctr_run(&ctd, &rootfs, &["-d"], "loner", &["sleep", "300"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pod_shim = shim_pid("pod-a").expect("no shim serves the pod");
    assert_eq!(shim_pid("pod-a-app"), None, "the pod's second container got a shim of its own");
    assert!(shim_pid("loner").is_some_and(|pid| pid != pod_shim));
    // Both pod containers answer through the one shim; it stays until the last is deleted.
    let fifos = ctd.dir.path().join("fifo").display().to_string();
    for id in ["pod-a", "pod-a-app"] {
        assert_eq!(
            stdout(&ctd.ctr(&["task", "exec", "--fifo-dir", &fifos, "--exec-id", "x", id, "echo", id])),
            format!("{id}\n")
        );
    }
    ctd.kill_task("pod-a-app");
    assert!(ctd.ctr(&["task", "delete", "pod-a-app"]).status.success());
    assert!(
        std::path::Path::new(&format!("/proc/{pod_shim}")).exists(),
        "the pod's shim left with a container still in it"
    );
    assert_eq!(task_status(&ctd, "pod-a"), "RUNNING");
}

#[test]
fn a_containers_sigterm_handler_runs_when_ctr_stops_it() {
    let Some(ctd) = containerd_ready("a_containers_sigterm_handler_runs_when_ctr_stops_it") else { return };
    let image = OciArchive::build("berth.test/trap:latest", &[LayerDir::busybox()], &["sh"]);
    ctd.import(&image);
    let script = "trap 'echo stopping; exit 7' TERM; while :; do sleep 1; done";
    let out = ctr_run_image(&ctd, &["-d"], &image.name, "trap", &["sh", "-c", script]);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), ctd.log());
    let mut events = ctd.watch_events();
    std::thread::sleep(std::time::Duration::from_millis(300)); // ctr subscribes
                                                               // `ctr task kill` sends SIGTERM, as a stop with a grace period does first; the shim must
                                                               // not leave it blocked in the container's process.
    assert!(ctd.ctr(&["task", "kill", "trap"]).status.success());
    let exit = events.wait_for("/tasks/exit", "trap");
    assert!(exit.contains("\"exit_status\":7"), "{exit}");
    assert!(ctd.ctr(&["task", "delete", "trap"]).status.success());
    assert!(ctd.ctr(&["containers", "delete", "trap"]).status.success());
}
