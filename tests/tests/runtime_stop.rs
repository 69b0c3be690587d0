//! `berth stop` on bundles made by `berth-image unpack`: the stop signal first, SIGKILL once
//! the grace period is over, and a return as soon as the container has exited. Every
//! assertion reads the container's own output or exit status, never the clock.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use berth_tests::fixtures::container_id;
use berth_tests::image_store::ImageStore;
use berth_tests::oci_image::{LayerDir, OciArchive};
use berth_tests::privilege::require_root;
use berth_tests::runtime::Berth;
use serde_json::json;

fn store_with_busybox(test: &str) -> (ImageStore, String) {
    let store = ImageStore::new(test);
    let config = json!({"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]});
    let name = store.import(&OciArchive::build_with_config(
        &format!("berth.test/{test}:latest"),
        &[LayerDir::busybox()],
        config,
    ));
    (store, name)
}

/// `berth run --keep` of a bundle in the foreground, as a child the test waits on; killed
/// on drop if the test fails before it ends.
struct Foreground {
    child: Child,
    id: String,
    /// `berth --root ROOT kill ID KILL`, for the drop.
    kill: std::process::Command,
}

impl Foreground {
    /// Starts the container and waits until its script has written /ready in its rootfs.
    fn start(berth: &Berth, bundle: &Path, test: &str) -> Foreground {
        let id = container_id(test);
        let child = berth
            .command(&["run", "--keep", "--bundle", bundle.to_str().unwrap(), &id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let kill = berth.command(&["kill", &id, "KILL"]);
        let mut foreground = Foreground { child, id, kill };
        let ready = bundle.join("rootfs/ready");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ready.exists() {
            if let Some(status) = foreground.child.try_wait().unwrap() {
                panic!("the container of {test} ended before it was ready: {status}");
            }
            assert!(Instant::now() < deadline, "the container of {test} never became ready");
            std::thread::sleep(Duration::from_millis(20));
        }
        foreground
    }

    /// The exit code `berth run` reported for the container (128+signal when killed).
    fn exit_code(mut self) -> i32 {
        let status = self.child.wait().unwrap();
        status.code().expect("berth run was killed itself")
    }
}

impl Drop for Foreground {
    /// Ends the container through berth, so `berth run` finishes its own bookkeeping (a
    /// `berth run` killed mid-write could leave a state no later delete can read); only
    /// when that fails is `berth run` itself killed.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let killed = self.kill.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
        if !killed {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn marker(bundle: &Path) -> PathBuf {
    bundle.join("rootfs/marker")
}

/// Ignores TERM (PID 1 would anyway without a handler; the trap makes it explicit).
const IGNORES_TERM: &str = "trap '' TERM; touch /ready; while :; do sleep 1; done";
/// Writes which signal came, then exits with its own code.
const TRAPS_TERM_AND_USR1: &str = "trap 'echo TERM > /marker; exit 3' TERM; trap 'echo USR1 > /marker; exit 4' USR1; \
touch /ready; while :; do sleep 1 & wait $!; done";

#[test]
fn stop_kills_a_process_that_ignores_the_stop_signal_after_the_grace_period() {
    if !require_root("stop_kills_a_process_that_ignores_the_stop_signal_after_the_grace_period") {
        return;
    }
    let (store, image) = store_with_busybox("stop-ignores");
    let berth = Berth::new("stop-ignores");
    let bundle = store.unpack(&image, "ignores", &["--", "sh", "-c", IGNORES_TERM], &[]);
    let container = Foreground::start(&berth, &bundle, "stop-ignores");
    let id = container.id.clone();
    berth.ok(&["stop", "-t", "1", &id]);
    assert_eq!(berth.state(&id)["status"], "stopped", "stop returned before the container stopped");
    assert_eq!(container.exit_code(), 128 + 9, "the container was not ended by SIGKILL");
    // Stopping a stopped container is not an error.
    berth.ok(&["stop", &id]);
}

#[test]
fn stop_timeout_annotation_is_the_grace_period_without_t() {
    if !require_root("stop_timeout_annotation_is_the_grace_period_without_t") {
        return;
    }
    let (store, image) = store_with_busybox("stop-annotated");
    let berth = Berth::new("stop-annotated");
    // It would leave 2 s after SIGTERM (exit 3), well inside the 10 s default: only a grace
    // period of 0 taken from the annotation ends it by SIGKILL.
    let leaves_late = "trap 'sleep 2; exit 3' TERM; touch /ready; while :; do sleep 1; done";
    let bundle = store.unpack(&image, "annotated", &["--stop-timeout", "0", "--", "sh", "-c", leaves_late], &[]);
    let container = Foreground::start(&berth, &bundle, "stop-annotated");
    let id = container.id.clone();
    berth.ok(&["stop", &id]);
    assert_eq!(container.exit_code(), 128 + 9, "the annotation's grace period of 0 was not used");
}

#[test]
fn stop_returns_once_a_process_that_traps_term_exits() {
    if !require_root("stop_returns_once_a_process_that_traps_term_exits") {
        return;
    }
    let (store, image) = store_with_busybox("stop-traps");
    let berth = Berth::new("stop-traps");
    let bundle = store.unpack(&image, "traps", &["--", "sh", "-c", TRAPS_TERM_AND_USR1], &[]);
    let container = Foreground::start(&berth, &bundle, "stop-traps");
    let id = container.id.clone();
    // A 30 s grace period: stop returns when the trap has run, and the exit is the trap's own.
    berth.ok(&["stop", "-t", "30", &id]);
    assert_eq!(fs::read_to_string(marker(&bundle)).unwrap(), "TERM\n", "the container's TERM trap did not run");
    assert_eq!(container.exit_code(), 3, "the container did not exit through its trap");
}

#[test]
fn stop_sends_the_stop_signal_from_the_annotation() {
    if !require_root("stop_sends_the_stop_signal_from_the_annotation") {
        return;
    }
    let (store, image) = store_with_busybox("stop-signal");
    let berth = Berth::new("stop-signal");
    let bundle = store.unpack(&image, "usr1", &["--stop-signal", "USR1", "--", "sh", "-c", TRAPS_TERM_AND_USR1], &[]);
    let container = Foreground::start(&berth, &bundle, "stop-signal");
    let id = container.id.clone();
    berth.ok(&["stop", "-t", "30", &id]);
    assert_eq!(fs::read_to_string(marker(&bundle)).unwrap(), "USR1\n", "the stop signal was not the annotation's");
    assert_eq!(container.exit_code(), 4);
}

#[test]
fn stop_sends_a_real_time_stop_signal_as_systemd_images_name_it() {
    if !require_root("stop_sends_a_real_time_stop_signal_as_systemd_images_name_it") {
        return;
    }
    let (store, image) = store_with_busybox("stop-rt");
    let berth = Berth::new("stop-rt");
    // systemd's SIGRTMIN+3, as Docker and runc number it.
    let rtmin_plus_3 = "37";
    let script = format!("trap 'echo RT > /marker; exit 5' {rtmin_plus_3}; touch /ready; while :; do sleep 1; done");
    let bundle = store.unpack(&image, "rt", &["--stop-signal", "SIGRTMIN+3", "--", "sh", "-c", &script], &[]);
    let container = Foreground::start(&berth, &bundle, "stop-rt");
    let id = container.id.clone();
    berth.ok(&["stop", "-t", "30", &id]);
    assert_eq!(fs::read_to_string(marker(&bundle)).unwrap(), "RT\n", "SIGRTMIN+3 was not the signal sent");
    assert_eq!(container.exit_code(), 5);
}

#[test]
fn stop_of_an_unknown_id_is_a_clear_error() {
    if !require_root("stop_of_an_unknown_id_is_a_clear_error") {
        return;
    }
    let berth = Berth::new("stop-unknown");
    let stderr = berth.fails(&["stop", "no-such-container"]);
    assert!(stderr.contains("container does not exist") && stderr.contains("no-such-container"), "{stderr}");
}

#[test]
fn stop_of_a_paused_container_thaws_it_so_the_signal_acts() {
    if !require_root("stop_of_a_paused_container_thaws_it_so_the_signal_acts") {
        return;
    }
    let (store, image) = store_with_busybox("stop-paused");
    let berth = Berth::new("stop-paused");
    let bundle = store.unpack(&image, "paused", &["--", "sh", "-c", TRAPS_TERM_AND_USR1], &[]);
    let container = Foreground::start(&berth, &bundle, "stop-paused");
    let id = container.id.clone();
    berth.ok(&["pause", &id]);
    assert_eq!(berth.state(&id)["status"], "paused");
    berth.ok(&["stop", "-t", "30", &id]);
    assert_eq!(fs::read_to_string(marker(&bundle)).unwrap(), "TERM\n", "the trap did not run after the thaw");
    assert_eq!(container.exit_code(), 3);
}

#[test]
fn stop_of_a_created_container_ends_it_without_a_grace_period() {
    if !require_root("stop_of_a_created_container_ends_it_without_a_grace_period") {
        return;
    }
    let (store, image) = store_with_busybox("stop-created");
    let berth = Berth::new("stop-created");
    let bundle = store.unpack(&image, "created", &["--", "sh", "-c", IGNORES_TERM], &[]);
    let id = berth_tests::fixtures::container_id("stop-created");
    berth.ok(&["create", "--bundle", bundle.to_str().unwrap(), &id]);
    // Nothing runs yet, so an hour's grace period is not waited: stop ends it and returns.
    let mut stop = berth.command(&["stop", "-t", "3600", &id]).spawn().unwrap();
    let mut finished = None;
    for _ in 0..600 {
        finished = stop.try_wait().unwrap();
        if finished.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if finished.is_none() {
        let _ = stop.kill();
        let _ = stop.wait();
        panic!("berth stop of a created container waited for its grace period");
    }
    assert!(finished.unwrap().success());
    assert_eq!(berth.state(&id)["status"], "stopped");
    berth.ok(&["delete", &id]);
}
