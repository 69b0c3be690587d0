//! Running an end-to-end test's body inside private network, mount and PID namespaces: the
//! test re-runs itself under `unshare -n -m -p` with a private directory, so nothing it
//! attaches, publishes or mounts reaches this machine's own network, and every process it
//! started (daemons, shims, containers) dies with it, also when it failed; cgroups the body
//! made below a per-run parent are removed afterwards.

use std::path::Path;
use std::process::Command;

use crate::fixtures::TempDir;

/// Set inside the private namespaces, for code that must never run outside them.
pub const INSIDE: &str = "BERTH_PRIVATE_NAMESPACES";

/// Inside private network and mount namespaces: a tmpfs on /run (network namespace pins,
/// daemons' sockets, the plugins' state, the iptables lock) and one on /var/lib, where
/// libcni (containerd's CRI plugin, podman) caches results in a fixed /var/lib/cni and
/// host-local keeps its default store; loopback up. Once per namespace.
pub fn make_run_and_var_lib_private() {
    assert!(
        std::env::var_os(INSIDE).is_some(),
        "this mounts over /run and /var/lib: call it only inside private namespaces"
    );
    let script = "mount -t tmpfs tmpfs /run && mkdir /run/netns && ip link set lo up && mount -t tmpfs tmpfs /var/lib";
    let out = Command::new("sh").arg("-c").arg(script).output().expect("cannot run sh");
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Inside (`var` set): runs `body` with the test's private directory. Outside: makes that
/// directory (named from `dir_prefix`: keep it short, podman refuses a long runroot),
/// re-runs `test` inside the namespaces with `var` and, when given, `BERTH_CGROUP_PARENT`
/// set to `cgroup_parent`-PID-RUN (one per run), removes that cgroup parent, and asserts the run passed.
pub fn run(test: &str, var: &str, dir_prefix: &str, cgroup_parent: Option<&str>, body: impl FnOnce(&Path)) {
    if let Some(dir) = std::env::var_os(var) {
        body(Path::new(&dir));
        return;
    }
    let dir = TempDir::new(dir_prefix);
    let mut command = Command::new("unshare");
    command.args(["-n", "-m", "-p", "-f", "--mount-proc", "--"]).arg(std::env::current_exe().unwrap());
    command.args([test, "--exact", "--nocapture", "--test-threads=1"]).env(var, dir.path()).env(INSIDE, "1");
    // One per run: the tests of one binary run at once, and each asserts that its own parent
    // is empty at its end.
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let cgroup_parent = cgroup_parent.map(|parent| format!("{parent}-{}-{run}", std::process::id()));
    if let Some(parent) = &cgroup_parent {
        command.env("BERTH_CGROUP_PARENT", parent);
    }
    let out = command.output().unwrap();
    for parent in cgroup_parent.iter().flat_map(|p| crate::runtime::cgroup_mounts().into_iter().map(move |m| m.join(p)))
    {
        crate::runtime::remove_cgroup_tree(&parent);
    }
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("1 passed"), "{test} failed in its private namespaces:\n{text}");
}
