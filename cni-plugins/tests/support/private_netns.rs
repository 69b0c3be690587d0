//! Running a test inside a private network namespace it creates: the test re-runs itself
//! under `unshare -n -m` with a tmpfs on /run and its own /sys, where "containers" and
//! "hosts" are namespaces made inside it; and the shell helpers those tests use (shared by
//! the plugin tests through `#[path]`).
#![allow(dead_code)] // each test file uses its own subset

use std::path::Path;
use std::process::{Command, Stdio};

/// Debian's reference plugins, the differential oracle.
pub const REFERENCE_DIR: &str = "/usr/lib/cni";

/// True inside the private namespace (run the body); outside, re-runs `test` there.
pub fn inside_private_netns(test: &str) -> bool {
    if std::env::var_os("BERTH_CNI_PRIVATE_NETNS").is_some() {
        // /sys shows the namespace that mounted it: mount one for the private namespace.
        sh("mount -t tmpfs tmpfs /run && mkdir /run/netns && mount -t sysfs sysfs /sys && ip link set lo up");
        return true;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{test} needs root (CI runs as root)");
        eprintln!("skipping {test}: needs root");
        return false;
    }
    let out = Command::new("unshare")
        .args(["-n", "-m", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("BERTH_CNI_PRIVATE_NETNS", "1")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("1 passed"), "{test} failed inside its private namespace:\n{text}");
    false
}

/// `inside_private_netns` for a test that also needs the reference plugin `plugin`.
pub fn inside_private_netns_with_reference(test: &str, plugin: &str) -> bool {
    if std::env::var_os("BERTH_CNI_PRIVATE_NETNS").is_none() && !Path::new(REFERENCE_DIR).join(plugin).exists() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{test} needs Debian's containernetworking-plugins");
        eprintln!("skipping {test}: needs Debian's containernetworking-plugins");
        return false;
    }
    inside_private_netns(test)
}

/// Runs `script` with `sh -e`; its stdout (success asserted).
pub fn sh(script: &str) -> String {
    let out = Command::new("sh").arg("-ec").arg(script).output().unwrap();
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether `script` succeeds (its output dropped).
pub fn succeeds(script: &str) -> bool {
    Command::new("sh").arg("-c").arg(script).stdout(Stdio::null()).stderr(Stdio::null()).status().unwrap().success()
}
