//! `unpack`'s `docker run` options in config.json, for the forms the end-to-end tests do not
//! run (entrypoint cleared, USER:GROUP and uid forms, swap defaults and -1, default name and
//! stop signal), and bad input: one clear error, and no bundle directory, mount or store
//! record left behind.

mod common;
use common::{busybox_layer, err, ok, privileged, write_image, Temp};
use std::fs;
use std::path::{Path, PathBuf};

/// A store with image `t` (busybox, Entrypoint + Cmd, StopSignal SIGQUIT, user app).
fn store(t: &Temp) -> PathBuf {
    let (layout, store) = (t.0.join("layout"), t.0.join("store"));
    write_image(
        &layout,
        "t",
        &[busybox_layer()],
        serde_json::json!({"Entrypoint": ["/bin/echo", "ep"], "Cmd": ["cmd"], "StopSignal": "SIGQUIT", "User": "app"}),
    );
    ok(&store, &["import", layout.to_str().unwrap()]);
    store
}

fn unpack(store: &Path, bundle: &Path, options: &[&str]) -> serde_json::Value {
    let mut args = vec!["unpack", "--network", "none", "t", bundle.to_str().unwrap()];
    args.extend_from_slice(options);
    ok(store, &args);
    let config = serde_json::from_slice(&fs::read(bundle.join("config.json")).unwrap()).unwrap();
    ok(store, &["release", bundle.to_str().unwrap()]);
    config
}

#[test]
fn option_forms_are_written_as_docker_sets_them() {
    if !privileged("option_forms_are_written_as_docker_sets_them") {
        return;
    }
    let t = Temp::new();
    let store = store(&t);
    let bundle = t.0.join("my-app");
    let config = unpack(&store, &bundle, &[]);
    assert_eq!(config["process"]["args"], serde_json::json!(["/bin/echo", "ep", "cmd"]));
    assert_eq!(config["annotations"]["org.opencontainers.image.stopSignal"], "SIGQUIT", "the image's StopSignal");
    assert_eq!(config["annotations"]["berth.name"], "my-app", "the bundle directory's name");
    assert!(config["annotations"].get("berth.stop-timeout").is_none());
    assert_eq!(config["process"]["user"]["uid"], 1000);

    let config = unpack(&store, &bundle, &["--entrypoint", ""]);
    assert_eq!(config["process"]["args"], serde_json::json!(["cmd"]), "--entrypoint '' keeps the image's CMD");
    let config = unpack(&store, &bundle, &["--entrypoint", "", "--", "/bin/sh", "-c", "true"]);
    assert_eq!(config["process"]["args"], serde_json::json!(["/bin/sh", "-c", "true"]));

    let config = unpack(&store, &bundle, &["-u", "app:wheel"]);
    assert_eq!(
        config["process"]["user"],
        serde_json::json!({"uid": 1000, "gid": 10, "additionalGids": []}),
        "a group given: no others"
    );
    let config = unpack(&store, &bundle, &["-u", "4242"]);
    assert_eq!(
        config["process"]["user"],
        serde_json::json!({"uid": 4242, "gid": 0, "additionalGids": []}),
        "a uid not in passwd"
    );

    let memory = |config: &serde_json::Value| config["linux"]["resources"]["memory"].clone();
    let config = unpack(&store, &bundle, &["--memory", "1g", "--memory-swap", "-1"]);
    assert_eq!(memory(&config), serde_json::json!({"limit": 1 << 30, "swap": -1}));
    let config = unpack(&store, &bundle, &["-m", "64M"]);
    if Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists() {
        assert_eq!(memory(&config), serde_json::json!({"limit": 64 << 20, "swap": 128 << 20}), "Docker: swap = memory");
    }
    let config = unpack(&store, &bundle, &["--pids-limit", "-1", "--cpus", "1"]);
    assert_eq!(config["linux"]["resources"]["pids"], serde_json::json!({"limit": -1}));
    assert_eq!(config["linux"]["resources"]["cpu"], serde_json::json!({"quota": 100000, "period": 100000}));
    let config = unpack(&store, &bundle, &["--name", "other", "--hostname", "h", "--stop-signal", "9"]);
    assert_eq!(config["annotations"]["berth.name"], "other");
    assert_eq!(config["annotations"]["org.opencontainers.image.stopSignal"], "9");
    assert_eq!(config["hostname"], "h");
    assert!(!bundle.exists(), "release left {}", bundle.display());
}

#[test]
fn bad_input_gets_one_clear_error_and_leaves_nothing() {
    if !privileged("bad_input_gets_one_clear_error_and_leaves_nothing") {
        return;
    }
    let t = Temp::new();
    let store = store(&t);
    let bundle = t.0.join("bundle");
    let cases: &[(&[&str], &str)] = &[
        (&["--bogus"], "unexpected argument '--bogus'"),
        (&["--memory", "12x"], "invalid size \"12x\""),
        (&["--memory", "1m"], "below the smallest limit"),
        (&["--memory-swap", "1g"], "--memory-swap needs --memory"),
        (&["--memory", "64m", "--memory-swap", "32m"], "is below --memory"),
        (&["--cpus", "many"], "invalid --cpus"),
        (&["--cap-add", "NET_NOPE"], "unknown capability \"NET_NOPE\""),
        (&["--device", "/nonexistent-device"], "--device /nonexistent-device: cannot stat it"),
        (&["--device", "/etc/passwd"], "--device /etc/passwd: not a character or block device"),
        (&["--device", "/dev/null:/dev/n:rwx"], "must be made of r, w and m"),
        (&["--add-host", "nocolon"], "bad --add-host \"nocolon\""),
        (&["--add-host", "db:999.1.1.1"], "is not an IP address"),
        (&["--dns", "not-an-ip"], "invalid value 'not-an-ip' for '--dns <IP>'"),
        (&["-u", "ghost"], "user \"ghost\" is not in the image's /etc/passwd"),
        (&["-u", "app:nogroup"], "group \"nogroup\" is not in the image's /etc/group"),
        (&["-w", "relative"], "--workdir \"relative\" is not an absolute path"),
        (&["--stop-signal", "SIGNOPE"], "unknown signal \"SIGNOPE\""),
        (&["--name", "bad name"], "is not a valid container name"),
        (&["--env-file", "/nonexistent-env-file"], "cannot read --env-file /nonexistent-env-file"),
    ];
    for (options, message) in cases {
        let mut args = vec!["unpack", "--network", "none", "t", bundle.to_str().unwrap()];
        args.extend_from_slice(options);
        let stderr = err(&store, &args);
        assert!(stderr.contains(message), "{options:?}: expected {message:?} in: {stderr}");
        assert_eq!(
            stderr.trim_end().lines().filter(|l| l.contains("error") || l.starts_with("berth-image:")).count(),
            1,
            "{options:?}: one error: {stderr}"
        );
        assert!(!bundle.exists(), "{options:?} left {}", bundle.display());
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(t.0.to_str().unwrap()), "{options:?} left a mount below {}", t.0.display());
        let df: serde_json::Value = serde_json::from_str(&ok(&store, &["df", "--json"])).unwrap();
        assert_eq!(df["bundles"].as_array().unwrap().len(), 0, "{options:?}: the store records a bundle: {df}");
    }
    // The bundle directory's name is the default container name, made into a valid one.
    let odd = t.0.join("odd name");
    let config = unpack(&store, &odd, &[]);
    assert_eq!(config["annotations"]["berth.name"], "odd-name");
    let unnamed = t.0.join("__");
    let stderr = err(&store, &["unpack", "--network", "none", "t", unnamed.to_str().unwrap()]);
    assert!(stderr.contains("give one with --name"), "{stderr}");
    assert!(!unnamed.exists(), "a refused unpack left {}", unnamed.display());
    assert_eq!(unpack(&store, &unnamed, &["--name", "fine"])["annotations"]["berth.name"], "fine");
}
