//! `release` of a bundle something still uses: refused, naming the process, while a
//! container (created or running, berth's or runc's) or any host process has its root or
//! working directory in the rootfs; once they are gone the release leaves nothing.

mod common;
use common::{busybox_layer, err, ok, privileged, write_image, Temp};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A store with a busybox image whose command sleeps, and a bundle of it from `unpack`.
fn sleeping_bundle(t: &Temp) -> (PathBuf, PathBuf) {
    let (layout, store, bundle) = (t.0.join("layout"), t.0.join("store"), t.0.join("bundle"));
    write_image(&layout, "t", &[busybox_layer()], serde_json::json!({ "Cmd": ["sleep", "600"] }));
    ok(&store, &["import", layout.to_str().unwrap()]);
    ok(&store, &["unpack", "--network", "none", "t", bundle.to_str().unwrap()]);
    (store, bundle)
}

/// Asserts release is refused because of process `pid`, and that the bundle is untouched.
fn refused_for(store: &Path, bundle: &Path, pid: u32) {
    let stderr = err(store, &["release", bundle.to_str().unwrap()]);
    assert!(
        stderr.contains(&format!("process {pid} ("))
            && stderr.contains("in use")
            && stderr.contains("delete its container first"),
        "release was not refused for process {pid}: {stderr}"
    );
    assert!(
        bundle.join("rootfs/bin/busybox").exists() && bundle.join("config.json").exists(),
        "a refused release removed part of the bundle"
    );
    let df: serde_json::Value = serde_json::from_str(&ok(store, &["df", "--json"])).unwrap();
    assert_eq!(df["bundles"].as_array().unwrap().len(), 1, "a refused release dropped the store's record: {df}");
}

/// Asserts release succeeds and leaves no mount, no directory and no store record.
fn released(store: &Path, bundle: &Path) {
    ok(store, &["release", bundle.to_str().unwrap()]);
    assert!(!bundle.exists(), "{} is still there", bundle.display());
    assert!(
        !fs::read_to_string("/proc/self/mountinfo").unwrap().contains(bundle.to_str().unwrap()),
        "a mount below the bundle is left"
    );
    let df: serde_json::Value = serde_json::from_str(&ok(store, &["df", "--json"])).unwrap();
    assert_eq!(df["bundles"].as_array().unwrap().len(), 0, "the store still records the bundle: {df}");
}

/// A host process, killed and reaped on drop.
struct HostProcess(Child);

impl HostProcess {
    /// `sh -c 'cd DIR && exec sleep'`, returned once the sleep runs there.
    fn sleeping_in(dir: &Path) -> HostProcess {
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("cd '{}' && exec sleep 600", dir.display()))
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let process = HostProcess(child);
        let pid = process.0.id();
        while fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim() != "sleep" {
            assert!(fs::metadata(format!("/proc/{pid}")).is_ok(), "the sleeper in {} ended", dir.display());
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        process
    }

    fn end(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_berth_container_blocks_release_from_create_to_delete() {
    if !privileged("a_berth_container_blocks_release_from_create_to_delete") {
        return;
    }
    let t = Temp::new();
    let berth = berth_tests::runtime::Berth::new("image-release");
    let (store, bundle) = sleeping_bundle(&t);
    let id = berth_tests::fixtures::container_id("image-release");
    berth.ok(&["create", "--bundle", bundle.to_str().unwrap(), &id]);
    let pid = berth.state(&id)["pid"].as_u64().unwrap() as u32;
    // Created, not started: its init already has its root in the rootfs.
    refused_for(&store, &bundle, pid);
    berth.ok(&["start", &id]);
    berth.wait_status(&id, "running");
    refused_for(&store, &bundle, pid);
    berth.ok(&["kill", &id, "KILL"]);
    berth.wait_status(&id, "stopped");
    berth.ok(&["delete", &id]);
    released(&store, &bundle);
}

#[test]
fn a_runc_container_blocks_release() {
    if !privileged("a_runc_container_blocks_release") || !common::have("runc", "a_runc_container_blocks_release") {
        return;
    }
    let t = Temp::new();
    let (store, bundle) = sleeping_bundle(&t);
    let runc =
        RuncContainer { root: t.0.join("runc-root"), id: berth_tests::fixtures::container_id("image-release-runc") };
    let created = runc.command(&["create", "--bundle", bundle.to_str().unwrap(), &runc.id]).status().unwrap();
    assert!(created.success(), "runc create failed");
    let state = runc.command(&["state", &runc.id]).stdout(Stdio::piped()).output().unwrap();
    let pid = serde_json::from_slice::<serde_json::Value>(&state.stdout).unwrap()["pid"].as_u64().unwrap() as u32;
    refused_for(&store, &bundle, pid);
    assert!(runc.command(&["delete", "--force", &runc.id]).status().unwrap().success(), "runc delete failed");
    released(&store, &bundle);
}

/// A runc container under a private root, force-deleted on drop.
struct RuncContainer {
    root: PathBuf,
    id: String,
}

impl RuncContainer {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("runc");
        command
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        command
    }
}

impl Drop for RuncContainer {
    fn drop(&mut self) {
        let _ = self.command(&["delete", "--force", &self.id]).stderr(Stdio::null()).status();
    }
}

#[test]
fn a_host_process_in_the_rootfs_or_a_mount_below_it_blocks_release() {
    if !privileged("a_host_process_in_the_rootfs_or_a_mount_below_it_blocks_release") {
        return;
    }
    let t = Temp::new();
    let (store, bundle) = sleeping_bundle(&t);
    let rootfs = bundle.join("rootfs");
    let in_etc = HostProcess::sleeping_in(&rootfs.join("etc"));
    refused_for(&store, &bundle, in_etc.0.id());
    in_etc.end();
    // A mount below the rootfs has a device of its own: found by walking up from it.
    let mnt = rootfs.join("mnt");
    fs::create_dir(&mnt).unwrap();
    common::sh(&format!("mount -t tmpfs berth-test '{}' && mkdir '{}/deep'", mnt.display(), mnt.display()));
    let in_submount = HostProcess::sleeping_in(&mnt.join("deep"));
    refused_for(&store, &bundle, in_submount.0.id());
    in_submount.end();
    released(&store, &bundle);
}
