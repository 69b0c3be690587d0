//! Drives the `berth` binary for tests: a private `--root` per test, helpers for its JSON,
//! and a guard that force-deletes every container the test left and removes the root.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fixtures::TempDir;

/// berth with a private state root; dropping it deletes every container under that root.
pub struct Berth {
    pub root: TempDir,
    pub bin: PathBuf,
    /// Captured stdio goes through files here: a created container inherits berth's stdio,
    /// and a pipe would stay open until that container exits.
    io: TempDir,
}

impl Berth {
    pub fn new(test: &str) -> Berth {
        Berth {
            root: TempDir::new(&format!("berth-root-{test}")),
            bin: crate::bins::bin("berth"),
            io: TempDir::new(&format!("berth-io-{test}")),
        }
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// `berth --root ROOT ARGS...`, with stdio not attached to the test's terminal.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.bin);
        command.arg("--root").arg(self.root()).args(args).stdin(Stdio::null());
        command
    }

    /// Runs berth to completion with stdout and stderr captured through files.
    pub fn output(&self, args: &[&str]) -> Output {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static CALL: AtomicUsize = AtomicUsize::new(0);
        let n = CALL.fetch_add(1, Ordering::Relaxed);
        let (out_path, err_path) = (self.io.path().join(format!("{n}.out")), self.io.path().join(format!("{n}.err")));
        let status = self
            .command(args)
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .status()
            .expect("cannot run berth");
        let output =
            Output { status, stdout: std::fs::read(&out_path).unwrap(), stderr: std::fs::read(&err_path).unwrap() };
        let _ = std::fs::remove_file(out_path);
        let _ = std::fs::remove_file(err_path);
        output
    }

    /// Runs berth and returns stdout; panics with berth's stderr when it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "berth {args:?} failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("berth printed non-UTF-8")
    }

    /// Runs berth expecting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "berth {args:?} should exit 1, stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).expect("berth printed non-UTF-8")
    }

    pub fn state(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["state", id])).expect("state is not JSON")
    }

    /// Waits (up to 10 s) for a container to reach `status`.
    pub fn wait_status(&self, id: &str, status: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let state = self.state(id);
            if state["status"] == status {
                return state;
            }
            assert!(Instant::now() < deadline, "container {id} never became {status}; last state {state}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `run` in the foreground of a bundle; returns (exit code, stdout, stderr).
    pub fn run_bundle(&self, bundle: &Path, id: &str) -> (i32, String, String) {
        let out = self.output(&["run", "--bundle", bundle.to_str().unwrap(), id]);
        (
            out.status.code().expect("berth was killed by a signal"),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(self.root()) {
            for entry in entries.flatten() {
                let id = entry.file_name().to_string_lossy().into_owned();
                let _ = self.command(&["delete", "--force", &id]).stderr(Stdio::null()).status();
            }
        }
    }
}

/// Mount points of the cgroup v1 controllers (and the unified tree) on this host.
pub fn cgroup_mounts() -> Vec<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            let mount_point = left.split_whitespace().nth(4)?;
            (fstype == "cgroup" || fstype == "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .collect()
}

/// Removes a container's cgroup directory from every hierarchy, if it is still there.
pub fn remove_cgroup(path: &str) {
    let relative = path.trim_start_matches('/');
    for mount in cgroup_mounts() {
        let _ = std::fs::remove_dir(mount.join(relative));
    }
}

/// Removes a cgroup directory and the ones below it (empty ones; a cgroup holding a
/// process stays, and says so).
pub fn remove_cgroup_tree(dir: &Path) {
    let Ok(children) = std::fs::read_dir(dir) else { return };
    for child in children.flatten() {
        if child.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup_tree(&child.path());
        }
    }
    if let Err(e) = std::fs::remove_dir(dir) {
        eprintln!("cannot remove cgroup {}: {e}", dir.display());
    }
}

/// The layout this host has, for tests to say which one they ran on.
pub fn cgroup_layout() -> &'static str {
    let unified = nix::sys::statfs::statfs("/sys/fs/cgroup")
        .map(|fs| fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false);
    if unified {
        "v2 (unified)"
    } else if Path::new("/sys/fs/cgroup/unified").exists() {
        "v1 (hybrid)"
    } else {
        "v1 (legacy)"
    }
}
