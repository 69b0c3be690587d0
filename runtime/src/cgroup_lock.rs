//! Starts the kernel's wait for the cgroup migration lock early, so `create`, `run` and
//! `exec` do not wait for all of it in series. The new process joins the container's
//! cgroups by a `cgroup.procs` write (libcontainer's intermediate process makes it), which
//! takes a global lock; when no such write happened in the last RCU grace period, the
//! writer first waits a whole grace period (3-15 ms measured here, more than the rest of an
//! exec), and writers that come while that wait is under way, or within a grace period
//! after it, wait only for what is left of it. A thread started first thing makes that
//! first, harmless write (berth's pid into the cgroup berth is already in) while berth sets
//! the container up.

use std::io::Write;

/// Starts a thread that rewrites berth's pid into berth's own cgroup (which moves
/// nothing) and ends. Best effort: without a writable cgroup file (rootless) it changes
/// nothing. The wait it starts ends with the grace period the new process's own write
/// waits for, so the thread is gone before berth is done.
pub fn warm_up() {
    let Some(procs) = own_cgroup_procs() else { return };
    std::thread::spawn(move || {
        let pid = std::process::id().to_string();
        let _ = std::fs::OpenOptions::new().write(true).open(&procs).and_then(|mut f| f.write_all(pid.as_bytes()));
    });
}

/// `cgroup.procs` of berth's own cgroup: in the v1 `pids` hierarchy, else in the v2 one.
fn own_cgroup_procs() -> Option<String> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path_of = |controllers: &str| {
        cgroups.lines().find_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, list, path) = (fields.next()?, fields.next()?, fields.next()?);
            (list == controllers).then(|| path.trim_end_matches('/').to_string())
        })
    };
    if let Some(path) = path_of("pids") {
        return Some(format!("/sys/fs/cgroup/pids{path}/cgroup.procs"));
    }
    let path = path_of("")?;
    let unified = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() { "" } else { "/unified" };
    Some(format!("/sys/fs/cgroup{unified}{path}/cgroup.procs"))
}
