//! berth driven with the exact argument lists containerd's runc shim and conmon send,
//! a console socket receiver for terminal containers, and concurrent callers.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::process::Stdio;

use berth_tests::fixtures::{container_id, Bundle, TempDir};
use berth_tests::privilege::require_root;
use berth_tests::runtime::Berth;
use serde_json::json;

#[test]
fn containerd_shim_argument_lists() {
    if !require_root("containerd_shim_argument_lists") {
        return;
    }
    let bundle = Bundle::busybox("shimargs", &["sleep", "300"]);
    let berth = Berth::new("shimargs");
    let id = container_id("shimargs");
    let b = bundle.path().to_str().unwrap();
    let log = format!("{b}/log.json");
    let pid_file = format!("{b}/init.pid");
    let global = ["--log", log.as_str(), "--log-format", "json"];
    let with = |args: &[&str]| -> Vec<String> { global.iter().chain(args.iter()).map(|s| s.to_string()).collect() };
    let call = |args: Vec<String>| berth.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());

    call(with(&["create", "--bundle", b, "--pid-file", &pid_file, &id]));
    let init: i64 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    call(with(&["start", &id]));
    let process = TempDir::new("berth-shim-exec");
    let process_file = process.path().join("process.json");
    std::fs::write(
        &process_file,
        serde_json::to_vec(
            &json!({"args": ["sleep", "100"], "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}}),
        )
        .unwrap(),
    )
    .unwrap();
    let exec_pid = process.path().join("exec.pid");
    call(with(&[
        "exec",
        "--process",
        process_file.to_str().unwrap(),
        "--detach",
        "--pid-file",
        exec_pid.to_str().unwrap(),
        &id,
    ]));
    let pids: Vec<i64> = serde_json::from_str(&call(with(&["ps", "--format", "json", &id]))).unwrap();
    assert!(pids.contains(&init) && pids.len() == 2, "{pids:?}");
    call(with(&["pause", &id]));
    call(with(&["resume", &id]));
    let mut update = berth
        .command(&with(&["update", "--resources", "-", &id]).iter().map(String::as_str).collect::<Vec<_>>())
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    update.stdin.take().unwrap().write_all(br#"{"pids": {"limit": 50}}"#).unwrap();
    assert!(update.wait().unwrap().success());
    call(with(&["kill", "--all", &id, "9"]));
    berth.wait_status(&id, "stopped");
    call(with(&["delete", "--force", &id]));
    let features: serde_json::Value = serde_json::from_str(&call(with(&["features"]))).unwrap();
    assert!(features["ociVersionMax"].is_string());
    // Nothing failed, so containerd's log holds no error line.
    assert!(!std::fs::read_to_string(&log).unwrap_or_default().contains("\"error\""));
}

#[test]
fn conmon_argument_lists_with_signal_names() {
    if !require_root("conmon_argument_lists_with_signal_names") {
        return;
    }
    let bundle = Bundle::busybox("conmonargs", &["sleep", "300"]);
    let berth = Berth::new("conmonargs");
    let id = container_id("conmonargs");
    let b = bundle.path().to_str().unwrap();
    let pid_file = format!("{b}/pidfile");
    berth.ok(&["create", "--bundle", b, "--pid-file", &pid_file, &id]);
    assert_eq!(berth.state(&id)["status"], "created");
    berth.ok(&["start", &id]);
    assert_eq!(berth.state(&id)["status"], "running");
    berth.ok(&["kill", "-a", &id, "KILL"]);
    berth.wait_status(&id, "stopped");
    berth.ok(&["delete", "--force", &id]);
    let err = berth.fails(&["state", &id]);
    assert!(err.contains("container does not exist"), "{err}");
}

/// Receives the pty master berth sends over the console socket (SCM_RIGHTS).
fn receive_fd(listener: &UnixListener) -> OwnedFd {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let (stream, _) = listener.accept().unwrap();
    let mut buf = [0u8; 256];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg =
        recvmsg::<()>(std::os::fd::AsRawFd::as_raw_fd(&stream), &mut iov, Some(&mut space), MsgFlags::empty()).unwrap();
    for cmsg in msg.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            return unsafe { OwnedFd::from_raw_fd(fds[0]) };
        }
    }
    panic!("no file descriptor arrived on the console socket");
}

#[test]
fn terminal_containers_send_the_pty_master_to_the_console_socket() {
    if !require_root("terminal_containers_send_the_pty_master_to_the_console_socket") {
        return;
    }
    let mut bundle = Bundle::busybox("console", &["sh", "-c", "[ -t 0 ] && [ -t 1 ] && echo on-a-tty; tty"]);
    bundle.spec["process"]["terminal"] = json!(true);
    bundle.write_spec();
    let sockets = TempDir::new("berth-console");
    let socket = sockets.path().join("console.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let berth = Berth::new("console");
    let id = container_id("console");
    let receiver = std::thread::spawn(move || receive_fd(&listener));
    berth.ok(&[
        "create",
        "--bundle",
        bundle.path().to_str().unwrap(),
        "--console-socket",
        socket.to_str().unwrap(),
        &id,
    ]);
    let master = receiver.join().unwrap();
    berth.ok(&["start", &id]);
    let mut output = String::new();
    let mut file = std::fs::File::from(master);
    // The master reads EIO once the container's side is closed, when the process exits.
    let mut buf = [0u8; 1024];
    while let Ok(n @ 1..) = file.read(&mut buf) {
        output.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(output.contains("on-a-tty"), "{output:?}");
    assert!(output.contains("/dev/pts/0"), "{output:?}");
    berth.wait_status(&id, "stopped");
    berth.ok(&["delete", &id]);
}

#[test]
fn concurrent_callers_on_different_ids_are_safe() {
    if !require_root("concurrent_callers_on_different_ids_are_safe") {
        return;
    }
    let bundles: Vec<Bundle> = (0..8).map(|n| Bundle::busybox(&format!("conc{n}"), &["sleep", "300"])).collect();
    let berth = Berth::new("concurrent");
    std::thread::scope(|scope| {
        for (n, bundle) in bundles.iter().enumerate() {
            let berth = &berth;
            scope.spawn(move || {
                let id = format!("conc-{n}");
                for _ in 0..3 {
                    berth.ok(&["create", "-b", bundle.path().to_str().unwrap(), &id]);
                    assert_eq!(berth.state(&id)["status"], "created");
                    berth.ok(&["list", "--format", "json"]);
                    berth.ok(&["delete", &id]);
                }
            });
        }
    });
    assert_eq!(berth.ok(&["list", "-q"]), "");
}

fn on_a_pty(berth: &Berth, args: &[&str], rows: u16, cols: u16) -> (String, Option<i32>) {
    berth_tests::pty::run_on_a_pty(berth.command(args), rows, cols)
}

#[test]
fn foreground_terminals_are_proxied_with_the_window_size() {
    if !require_root("foreground_terminals_are_proxied_with_the_window_size") {
        return;
    }
    let script = "stty size; tty; [ -t 0 ] && echo tty-yes; exit 3";
    let mut bundle = Bundle::busybox("ttyrun", &["sh", "-c", script]);
    bundle.spec["process"]["terminal"] = json!(true);
    bundle.write_spec();
    let berth = Berth::new("ttyrun");
    let (output, code) =
        on_a_pty(&berth, &["run", "-b", bundle.path().to_str().unwrap(), &container_id("ttyrun")], 33, 101);
    assert_eq!(code, Some(3), "{output:?}");
    assert!(output.contains("33 101"), "{output:?}");
    assert!(output.contains("/dev/pts/0") && output.contains("tty-yes"), "{output:?}");

    let sleeper = Bundle::busybox("ttyexec", &["sleep", "300"]);
    let id = container_id("ttyexec");
    berth.ok(&["run", "-d", "-b", sleeper.path().to_str().unwrap(), &id]);
    let (output, code) = on_a_pty(&berth, &["exec", "-t", &id, "sh", "-c", script], 24, 77);
    assert_eq!(code, Some(3), "{output:?}");
    assert!(output.contains("24 77") && output.contains("tty-yes"), "{output:?}");
    // Without -t the same exec has no terminal.
    let plain = berth.output(&["exec", &id, "sh", "-c", "[ -t 0 ] && echo tty-yes || echo no-tty"]);
    assert_eq!(String::from_utf8_lossy(&plain.stdout), "no-tty\n");
    berth.ok(&["delete", "-f", &id]);
}
