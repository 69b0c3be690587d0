//! podman (Debian's) with berth as its OCI runtime, private to one test: its own storage,
//! run root, tmp dir, events log and cgroup parent, removed on drop.

use std::path::PathBuf;
use std::process::{Command, Output};

use crate::fixtures::TempDir;

/// podman with private storage, run root, tmp dir, events log and cgroup parent.
pub struct Podman {
    dir: TempDir,
    cgroup_parent: String,
}

impl Podman {
    pub fn private() -> Podman {
        let dir = TempDir::new("berth-podman");
        let conf = format!(
            "[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nevents_logfile_path = \"{}/events.log\"\nruntime_supports_json = [\"berth\"]\n",
            dir.path().display()
        );
        std::fs::write(dir.path().join("containers.conf"), conf).unwrap();
        Podman { dir, cgroup_parent: format!("/berth-podman-{}", std::process::id()) }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let d = self.dir.path();
        let mut command = Command::new("podman");
        command
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args(["--storage-driver", "overlay", "--runtime"])
            .arg(crate::bins::bin("berth"))
            .args(args);
        command
    }

    pub fn output(&self, args: &[&str]) -> Output {
        self.command(args).stdin(std::process::Stdio::null()).output().expect("cannot run podman")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "podman {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `podman run` arguments shared by every container of the test.
    pub fn run_args<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["run", "--network", "none", "--cgroup-parent", &self.cgroup_parent];
        args.extend_from_slice(extra);
        args
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.output(&["rm", "--all", "--force", "--time", "0"]);
        let _ = self.output(&["rmi", "--all", "--force"]);
        // Unmount whatever podman's storage left mounted under the private directory.
        let prefix = self.dir.path().to_string_lossy().into_owned();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<PathBuf> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4))
            .filter(|p| p.starts_with(&prefix))
            .map(PathBuf::from)
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for point in points {
            let _ = nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH);
        }
        for mount in crate::runtime::cgroup_mounts() {
            let parent = mount.join(self.cgroup_parent.trim_start_matches('/'));
            if let Ok(children) = std::fs::read_dir(&parent) {
                for child in children.flatten() {
                    let _ = std::fs::remove_dir(child.path());
                }
            }
            let _ = std::fs::remove_dir(parent);
        }
    }
}
