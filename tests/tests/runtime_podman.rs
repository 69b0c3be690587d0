//! podman (Debian's) drives berth as its OCI runtime (`--runtime`), with berth listed in
//! `runtime_supports_json` so podman reads berth's JSON error log, on a Debian image
//! built by the tests with debootstrap. Storage, state and cgroups are private to the test.

use berth_tests::fixtures::debian_rootfs_tar;
use berth_tests::podman::Podman;
use berth_tests::privilege::{have_program, missing, require_root};

const IMAGE: &str = "localhost/berth-debian";

fn ready(test: &str) -> Option<Podman> {
    if !require_root(test) {
        return None;
    }
    for program in ["podman", "conmon", "debootstrap"] {
        if !have_program(program) {
            missing(test, &format!("Debian's {program} (make deps installs it)"));
            return None;
        }
    }
    let podman = Podman::private();
    let tar = debian_rootfs_tar();
    podman.ok(&["import", tar.to_str().unwrap(), IMAGE]);
    Some(podman)
}

#[test]
fn podman_runs_a_debian_image_through_berth() {
    let Some(podman) = ready("podman_runs_a_debian_image_through_berth") else { return };

    // run in the foreground: output and exit code.
    let out = podman.output(&podman.run_args(&["--rm", IMAGE, "sh", "-c", "cat /etc/debian_version; exit 3"]));
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("12."), "{}", String::from_utf8_lossy(&out.stdout));

    // run -d, exec with and without a terminal.
    let script = "trap 'exit 0' TERM; while :; do sleep 0.1; done";
    podman.ok(&podman.run_args(&["-d", "--name", "web", IMAGE, "sh", "-c", script]));
    let out = podman.output(&["exec", "web", "sh", "-c", "echo exec-ok; exit 4"]);
    assert_eq!((out.status.code(), String::from_utf8_lossy(&out.stdout).as_ref()), (Some(4), "exec-ok\n"));
    let out = podman.ok(&["exec", "-t", "web", "sh", "-c", "tty; [ -t 0 ] && echo on-a-tty"]);
    assert!(out.contains("/dev/pts/") && out.contains("on-a-tty"), "{out:?}");

    // pause and unpause.
    podman.ok(&["pause", "web"]);
    assert_eq!(podman.ok(&["inspect", "--format", "{{.State.Status}}", "web"]).trim(), "paused");
    podman.ok(&["unpause", "web"]);
    assert_eq!(podman.ok(&["inspect", "--format", "{{.State.Status}}", "web"]).trim(), "running");

    // update, then the limit as the container's cgroup shows it.
    podman.ok(&["update", "--memory", "64m", "web"]);
    let limit_file = if berth_tests::runtime::cgroup_layout().starts_with("v2") {
        "/sys/fs/cgroup/memory.max"
    } else {
        "/sys/fs/cgroup/memory/memory.limit_in_bytes"
    };
    let limit = podman.ok(&["exec", "web", "cat", limit_file]);
    assert_eq!(limit.trim(), (64u64 << 20).to_string());

    // top lists the container's processes.
    let top = podman.ok(&["top", "web"]);
    assert!(top.contains("sleep") || top.contains("sh -c"), "{top}");

    // stop: SIGTERM reaches the trap, so the container exits 0 within the grace period.
    podman.ok(&["stop", "--time", "10", "web"]);
    assert_eq!(podman.ok(&["inspect", "--format", "{{.State.ExitCode}}", "web"]).trim(), "0");
    podman.ok(&["rm", "web"]);
    assert!(!podman.ok(&["ps", "-a", "--format", "{{.Names}}"]).contains("web"));

    // A process that ignores SIGTERM is killed when the grace period ends: 137.
    podman.ok(&podman.run_args(&["-d", "--name", "stubborn", IMAGE, "sleep", "300"]));
    podman.ok(&["stop", "--time", "1", "stubborn"]);
    assert_eq!(podman.ok(&["inspect", "--format", "{{.State.ExitCode}}", "stubborn"]).trim(), "137");
    podman.ok(&["rm", "stubborn"]);
}

#[test]
fn podman_shows_berths_own_error_for_a_container_that_cannot_start() {
    let Some(podman) = ready("podman_shows_berths_own_error_for_a_container_that_cannot_start") else { return };
    let out = podman.output(&podman.run_args(&["--rm", IMAGE, "/no/such/program"]));
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("executable '/no/such/program' not found"), "{stderr}");
    assert!(stderr.contains("cannot create container"), "podman should show berth's own message: {stderr}");
}

#[test]
fn podman_tmpfs_mounts_copy_up_the_image_content() {
    let Some(podman) = ready("podman_tmpfs_mounts_copy_up_the_image_content") else { return };
    // Both forms send tmpcopyup: the image's /etc/apt and /etc/default appear in new tmpfs
    // mounts, writes there stay in the tmpfs, and a directory the image lacks is made.
    let script = "ls /etc/apt /etc/default; echo written > /etc/apt/berth-written; cat /etc/apt/berth-written; \
                  ls -d /x; grep -E ' /(etc/apt|etc/default|x) ' /proc/self/mountinfo";
    let out = podman.ok(&podman.run_args(&[
        "--rm",
        "--tmpfs",
        "/etc/apt",
        "--mount",
        "type=tmpfs,destination=/etc/default",
        "--tmpfs",
        "/x",
        IMAGE,
        "sh",
        "-c",
        script,
    ]));
    for expected in ["sources.list", "apt.conf.d", "useradd", "written\n", "/x\n"] {
        assert!(out.contains(expected), "{expected:?} missing:\n{out}");
    }
    for point in ["/etc/apt", "/etc/default", "/x"] {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().nth(4) == Some(point))
            .unwrap_or_else(|| panic!("{point} not mounted:\n{out}"));
        assert!(line.contains(" - tmpfs "), "{point} is not a tmpfs: {line}");
    }
    // The image itself is unchanged: a new container sees no trace of the write.
    let out = podman.output(&podman.run_args(&["--rm", IMAGE, "ls", "/etc/apt/berth-written"]));
    assert_ne!(out.status.code(), Some(0), "a write to the tmpfs reached the image");
}
