//! CVE-2019-5736's shape: berth's binary runs inside the container (its entrypoint's
//! interpreter is `#!/proc/self/exe`), a handle to that binary is taken through
//! `/proc/<pid>/exe` while berth sets the container up, and reopened for writing once berth
//! has exited. The host's binary must stay unchanged.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;

use berth_tests::fixtures::{container_id, Bundle, TempDir};
use berth_tests::privilege::require_root;
use berth_tests::runtime::Berth;

#[test]
fn a_container_cannot_overwrite_berths_binary_through_proc_exe() {
    if !require_root("a_container_cannot_overwrite_berths_binary_through_proc_exe") {
        return;
    }
    attack(Create::Directly);
}

/// Where berth's binary is bind-mounted over another path (an overlayfs view of its
/// directory would show the file underneath), berth runs from a sealed memfd copy instead.
#[test]
fn a_bind_mounted_berth_is_protected_by_a_sealed_copy() {
    if !require_root("a_bind_mounted_berth_is_protected_by_a_sealed_copy") {
        return;
    }
    attack(Create::FromBindMount);
}

/// The sealed copy is made at berth's entry point, before the C library starts, for the
/// commands that enter a container; the same work after start-up is only the fallback
/// (which would log that it ran).
#[test]
fn create_run_and_exec_are_sealed_at_the_entry_point() {
    if !require_root("create_run_and_exec_are_sealed_at_the_entry_point") {
        return;
    }
    let berth = Berth::new("entry-seal");
    let logs = TempDir::new("berth-entry-seal");
    let log = logs.path().join("debug.log");
    let log_arg = log.to_str().unwrap();
    let bundle = Bundle::busybox("entry-seal", &["sleep", "30"]);
    let id = container_id("entry-seal");
    berth.ok(&["--debug", "--log", log_arg, "create", "-b", bundle.path().to_str().unwrap(), &id]);
    berth.ok(&["--debug", "--log", log_arg, "start", &id]);
    berth.ok(&["--debug", "--log", log_arg, "exec", &id, "true"]);
    berth.ok(&["delete", "-f", &id]);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.lines().count() > 3, "no debug log was written: {logged}");
    assert!(
        !logged.contains("did not re-execute it from a sealed copy"),
        "berth sealed itself after start-up, not at its entry point: {logged}"
    );
}

enum Create {
    Directly,
    /// In a private mount namespace, the binary bind-mounted over an empty file.
    FromBindMount,
}

fn attack(create: Create) {
    // The attack targets a copy of berth: the build's own binary is never at risk.
    let host = TempDir::new("berth-cve");
    let binary = host.path().join("berth");
    std::fs::copy(berth_tests::bins::bin("berth"), &binary).unwrap();
    let before = std::fs::read(&binary).unwrap();
    let mut berth = Berth::new("cve");
    berth.bin = binary.clone();

    let bundle = Bundle::busybox("cve", &["/victim"]);
    copy_shared_libraries(&binary, &bundle.rootfs());
    let victim = bundle.rootfs().join("victim");
    std::fs::write(&victim, "#!/proc/self/exe\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o755)).unwrap();
    let id = container_id("cve");
    // The container's stdio: a file, read once its process (berth's binary) has run.
    let output = host.path().join("container-output");
    let mut command = match create {
        Create::Directly => berth.command(&["create", "-b", bundle.path().to_str().unwrap(), &id]),
        Create::FromBindMount => {
            let target = host.path().join("runc");
            std::fs::write(&target, "").unwrap();
            let mut command = std::process::Command::new("unshare");
            command.args(["-m", "sh", "-c", "mount --bind \"$1\" \"$2\" && shift 2 && exec \"$@\"", "sh"]);
            command.arg(&binary).arg(&target).arg(&target).arg("--root").arg(berth.root());
            command.args(["create", "-b", bundle.path().to_str().unwrap(), &id]);
            command
        }
    };
    let status = command
        .stdout(std::fs::File::create(&output).unwrap())
        .stderr(std::fs::File::create(&output).unwrap())
        .status()
        .unwrap();
    assert!(status.success(), "{}", std::fs::read_to_string(&output).unwrap_or_default());
    // The container's init, set up by berth and waiting inside the container, runs berth's
    // binary: take the handle an attacker in the container would take.
    let pid = berth.state(&id)["pid"].as_i64().unwrap();
    let handle = std::fs::File::open(format!("/proc/{pid}/exe")).unwrap();
    berth.ok(&["start", &id]);
    berth.wait_status(&id, "stopped");
    berth.ok(&["delete", &id]);
    let text = std::fs::read_to_string(&output).unwrap();
    assert!(text.contains("/victim"), "berth's binary did not run inside the container: {text:?}");

    // berth has exited: nothing holds its binary busy any more.
    let reopened = std::fs::OpenOptions::new().write(true).open(format!("/proc/self/fd/{}", handle.as_raw_fd()));
    if let Ok(mut file) = reopened {
        let _ = file.write_all(b"#!/bin/sh\necho overwritten\n");
    }
    assert!(std::fs::read(&binary).unwrap() == before, "the container overwrote the host's berth binary");
}

/// Copies the shared libraries `binary` loads (and the loader) to the same paths under
/// `rootfs`, as a glibc-based image would have them, so the binary can run in the container.
fn copy_shared_libraries(binary: &std::path::Path, rootfs: &std::path::Path) {
    let ldd = std::process::Command::new("ldd").arg(binary).output().expect("cannot run ldd");
    let text = String::from_utf8_lossy(&ldd.stdout);
    let libraries = text.split_whitespace().filter(|word| word.starts_with('/'));
    for library in libraries {
        let target = rootfs.join(library.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(library, &target).unwrap_or_else(|e| panic!("cannot copy {library}: {e}"));
    }
}
