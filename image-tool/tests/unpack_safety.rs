//! `unpack` on hostile layers: every escape trick is refused or contained, nothing is
//! written outside the store and the bundle, and a refused unpack leaves nothing behind.
//! Also the bundle itself: runnable by runc, released without a trace, a second bundle
//! costing a mount and a config, images past a page of overlay options.

mod common;
use common::{busybox_layer, err, ok, privileged, write_image, Entry, Tar, Temp};
use std::fs;
use std::path::Path;

fn cmd() -> serde_json::Value {
    serde_json::json!({ "Cmd": ["/bin/sh"] })
}

/// Asserts a refused unpack left no bundle, no staging and no half layer.
fn nothing_left(store: &Path, bundle: &Path) {
    assert!(!bundle.exists(), "the refused bundle {} was left", bundle.display());
    assert_eq!(fs::read_dir(store.join("tmp")).unwrap().count(), 0, "staging left behind");
    for layer in fs::read_dir(store.join("layers")).unwrap().flatten() {
        assert!(layer.path().is_dir());
    }
}

/// Imports `layers` as image `t` into a fresh store and tries to unpack it.
fn try_unpack(
    t: &Temp,
    layers: &[Vec<u8>],
    config: serde_json::Value,
) -> (std::path::PathBuf, std::path::PathBuf, std::process::Output) {
    let (layout, store, bundle) = (t.0.join("layout"), t.0.join("store"), t.0.join("bundle"));
    write_image(&layout, "t", layers, config);
    ok(&store, &["import", layout.to_str().unwrap()]);
    let out = common::run(&store, &["unpack", "--network", "none", "t", bundle.to_str().unwrap()]);
    (store, bundle, out)
}

fn refused(t: &Temp, layers: &[Vec<u8>], config: serde_json::Value, says: &str) {
    let (store, bundle, out) = try_unpack(t, layers, config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains(says), "expected a refusal saying {says:?}, got: {stderr}");
    nothing_left(&store, &bundle);
}

#[test]
fn dot_dot_names_are_refused() {
    if !privileged("dot_dot_names_are_refused") {
        return;
    }
    let t = Temp::new();
    let layer = Tar::default().add(Entry::file("../../escaped", b"x")).finish();
    refused(&t, &[layer], cmd(), "climbs out of the layer");
    assert!(!t.0.join("escaped").exists() && !t.0.parent().unwrap().join("escaped").exists());
}

#[test]
fn absolute_names_stay_inside() {
    if !privileged("absolute_names_stay_inside") {
        return;
    }
    let t = Temp::new();
    let layer = Tar::default().add(Entry::file("/berth-absolute-test", b"inside")).finish();
    let (store, bundle, out) = try_unpack(&t, &[layer], cmd());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(fs::read(bundle.join("rootfs/berth-absolute-test")).unwrap(), b"inside");
    assert!(!Path::new("/berth-absolute-test").exists());
    ok(&store, &["release", bundle.to_str().unwrap()]);
}

#[test]
fn writes_through_a_layer_symlink_are_refused() {
    if !privileged("writes_through_a_layer_symlink_are_refused") {
        return;
    }
    let t = Temp::new();
    let outside = t.0.join("outside");
    fs::create_dir(&outside).unwrap();
    let target = outside.display().to_string();
    let layer = Tar::default().add(Entry::symlink("link", &target)).add(Entry::file("link/planted", b"x")).finish();
    refused(&t, &[layer], cmd(), "symlink");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "a file was planted outside");
}

#[test]
fn a_symlink_from_a_lower_layer_is_not_followed() {
    if !privileged("a_symlink_from_a_lower_layer_is_not_followed") {
        return;
    }
    let t = Temp::new();
    let outside = t.0.join("outside");
    fs::create_dir(&outside).unwrap();
    let target = outside.display().to_string();
    let lower = Tar::default().add(Entry::symlink("link", &target)).finish();
    let upper = Tar::default().add(Entry::file("link/planted", b"x")).finish();
    let (store, bundle, out) = try_unpack(&t, &[lower, upper], cmd());
    // Each layer is extracted on its own: the upper layer's `link/` is its own directory.
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "a file was planted outside");
    assert_eq!(fs::read(bundle.join("rootfs/link/planted")).unwrap(), b"x");
    ok(&store, &["release", bundle.to_str().unwrap()]);
}

#[test]
fn hardlinks_out_of_the_layer_are_refused() {
    if !privileged("hardlinks_out_of_the_layer_are_refused") {
        return;
    }
    let t = Temp::new();
    let victim = t.0.join("victim");
    fs::write(&victim, b"host file").unwrap();
    let absolute = victim.display().to_string();
    let layer = Tar::default().add(Entry::hardlink("grab", &absolute)).finish();
    refused(&t, &[layer], cmd(), "is not in this layer");
    let t2 = Temp::new();
    let layer = Tar::default().add(Entry::hardlink("grab", "../../../../etc/passwd")).finish();
    refused(&t2, &[layer], cmd(), "climbs out of the layer");
    assert_eq!(std::os::unix::fs::MetadataExt::nlink(&fs::metadata(&victim).unwrap()), 1);
}

#[test]
fn whiteouts_aimed_outside_are_refused() {
    if !privileged("whiteouts_aimed_outside_are_refused") {
        return;
    }
    let t = Temp::new();
    let victim = t.0.join("victim");
    fs::write(&victim, b"keep").unwrap();
    let layer = Tar::default().add(Entry::file("../.wh.victim", b"")).finish();
    refused(&t, &[layer], cmd(), "climbs out of the layer");
    assert_eq!(fs::read(&victim).unwrap(), b"keep");
}

#[test]
fn a_layers_own_whiteout_device_is_refused() {
    if !privileged("a_layers_own_whiteout_device_is_refused") {
        return;
    }
    let t = Temp::new();
    let lower = Tar::default().add(Entry::file("etc-file", b"keep")).finish();
    let upper = Tar::default().add(Entry::char_device("etc-file", 0, 0)).finish();
    refused(&t, &[lower, upper], cmd(), "would read as an overlay whiteout");
}

#[test]
fn overlay_xattrs_in_a_layer_are_not_obeyed() {
    if !privileged("overlay_xattrs_in_a_layer_are_not_obeyed") {
        return;
    }
    let t = Temp::new();
    let lower = Tar::default().add(Entry::dir("data")).add(Entry::file("data/kept", b"lower")).finish();
    // The upper layer claims `data` is opaque through a raw overlay xattr.
    let upper = Tar::default().pax(&[("SCHILY.xattr.trusted.overlay.opaque", b"y")]).add(Entry::dir("data")).finish();
    let (store, bundle, out) = try_unpack(&t, &[lower, upper], cmd());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        fs::read(bundle.join("rootfs/data/kept")).unwrap(),
        b"lower",
        "the layer's overlay xattr hid the lower layer"
    );
    ok(&store, &["release", bundle.to_str().unwrap()]);
}

#[test]
fn an_image_passwd_symlinked_out_of_the_rootfs_is_read_inside() {
    if !privileged("an_image_passwd_symlinked_out_of_the_rootfs_is_read_inside") {
        return;
    }
    let t = Temp::new();
    // A passwd outside the rootfs that knows the user; the image's own does not.
    let outside = t.0.join("host-passwd");
    fs::write(&outside, "evil:x:0:0::/:/bin/sh\n").unwrap();
    let target = format!("../../../../../../..{}", outside.display());
    let layer = Tar::default().add(Entry::dir("etc")).add(Entry::symlink("etc/passwd", &target)).finish();
    refused(
        &t,
        &[layer],
        serde_json::json!({ "Cmd": ["/bin/sh"], "User": "evil" }),
        "is not in the image's /etc/passwd",
    );
}

#[test]
fn volumes_must_be_absolute_and_clean() {
    if !privileged("volumes_must_be_absolute_and_clean") {
        return;
    }
    let t = Temp::new();
    let layer = Tar::default().add(Entry::file("f", b"x")).finish();
    refused(
        &t,
        &[layer],
        serde_json::json!({ "Cmd": ["/bin/sh"], "Volumes": { "/data/../../escape": {} } }),
        "not an absolute, clean path",
    );
}

#[test]
fn decompression_bombs_hit_the_caps() {
    if !privileged("decompression_bombs_hit_the_caps") {
        return;
    }
    let t = Temp::new();
    let big = vec![0u8; 4 << 20];
    let layer = Tar::default().add(Entry::file("zeros", &big)).finish();
    let (layout, store, bundle) = (t.0.join("layout"), t.0.join("store"), t.0.join("bundle"));
    write_image(&layout, "t", &[layer], cmd());
    ok(&store, &["import", layout.to_str().unwrap()]);
    let stderr =
        err(&store, &["unpack", "--network", "none", "--max-layer-bytes", "1048576", "t", bundle.to_str().unwrap()]);
    assert!(stderr.contains("--max-layer-bytes"), "{stderr}");
    nothing_left(&store, &bundle);
    let mut many = Tar::default();
    let names: Vec<String> = (0..50).map(|n| format!("f{n}")).collect();
    for name in &names {
        many.add(Entry::file(name, b""));
    }
    let t2 = Temp::new();
    let (layout, store, bundle) = (t2.0.join("layout"), t2.0.join("store"), t2.0.join("bundle"));
    write_image(&layout, "t", &[many.finish()], cmd());
    ok(&store, &["import", layout.to_str().unwrap()]);
    let stderr =
        err(&store, &["unpack", "--network", "none", "--max-layer-entries", "10", "t", bundle.to_str().unwrap()]);
    assert!(stderr.contains("--max-layer-entries"), "{stderr}");
    nothing_left(&store, &bundle);
    let help = ok(&store, &["unpack", "--network", "none", "--help"]);
    assert!(help.contains("--max-layer-bytes") && help.contains("--max-layer-entries"), "{help}");
}

#[test]
fn a_bundle_runs_with_runc_and_release_leaves_nothing() {
    if !privileged("a_bundle_runs_with_runc_and_release_leaves_nothing")
        || !common::have("runc", "a_bundle_runs_with_runc_and_release_leaves_nothing")
    {
        return;
    }
    let t = Temp::new();
    let config = serde_json::json!({
        "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["id; echo $GREETING; pwd; cat /data/marker 2>/dev/null || echo empty-volume"],
        "Env": ["GREETING=hello"], "User": "app", "WorkingDir": "/bin",
        "Labels": { "org.example": "label" }, "ExposedPorts": { "80/tcp": {} }, "StopSignal": "SIGQUIT",
        "Volumes": { "/data": {} }
    });
    let (store, bundle, out) = try_unpack(&t, &[busybox_layer()], config);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let spec: serde_json::Value = serde_json::from_slice(&fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(spec["annotations"]["org.example"], "label");
    assert_eq!(spec["annotations"]["org.opencontainers.image.exposedPorts"], "80/tcp");
    assert_eq!(spec["annotations"]["org.opencontainers.image.stopSignal"], "SIGQUIT");
    let root = t.0.join("runc-root");
    let run = std::process::Command::new("runc")
        .arg("--root")
        .arg(&root)
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(format!("berth-image-{}", std::process::id()))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "uid=1000(app) gid=1000(app) groups=10(wheel)\nhello\n/bin\nempty-volume\n",
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    ok(&store, &["release", bundle.to_str().unwrap()]);
    assert!(!bundle.exists());
    assert!(!fs::read_to_string("/proc/self/mountinfo").unwrap().contains(bundle.to_str().unwrap()));
    let df: serde_json::Value = serde_json::from_str(&ok(&store, &["df", "--json"])).unwrap();
    assert_eq!(df["bundles"].as_array().unwrap().len(), 0);
    // gc keeps the layers of a stored image and frees them once the image is gone.
    ok(&store, &["gc"]);
    assert_eq!(fs::read_dir(store.join("layers")).unwrap().count(), 1);
    ok(&store, &["rm", "t"]);
    ok(&store, &["gc"]);
    assert_eq!(fs::read_dir(store.join("layers")).unwrap().count(), 0);
}

#[test]
fn container_writes_land_in_the_bundles_upper_layer_never_in_the_store() {
    if !privileged("container_writes_land_in_the_bundles_upper_layer_never_in_the_store") {
        return;
    }
    let t = Temp::new();
    let berth = berth_tests::runtime::Berth::new("image-writes");
    // Written, changed, renamed and deleted inside the container: files of both layers.
    let script = "echo new > /new-file; echo appended >> /etc/passwd; rm /etc/group; rm /data/second; mv /data/keep /data/moved; \
                  mkdir /made; echo made > /made/f; chmod 700 /bin; echo done";
    let second = Tar::default()
        .add(Entry::dir("data"))
        .add(Entry::file("data/second", b"second layer"))
        .add(Entry::file("data/keep", b"kept"))
        .finish();
    let config = serde_json::json!({ "Entrypoint": ["/bin/sh", "-c"], "Cmd": [script] });
    let (store, bundle, out) = try_unpack(&t, &[busybox_layer(), second], config);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let before = common::snapshot(&store);
    assert!(
        before.keys().any(|p| p.ends_with("etc/passwd")) && before.keys().any(|p| p.ends_with("data/keep")),
        "the store holds no extracted layers: {before:?}"
    );
    let (code, stdout, stderr) = berth.run_bundle(&bundle, &berth_tests::fixtures::container_id("image-writes"));
    assert_eq!((code, stdout.as_str()), (0, "done\n"), "the container's writes failed: {stderr}");
    let after = common::snapshot(&store);
    for (path, line) in &before {
        assert_eq!(after.get(path), Some(line), "the container's writes changed the store's {path}");
    }
    let added: Vec<&String> = after.keys().filter(|p| !before.contains_key(*p)).collect();
    assert!(added.is_empty(), "the container's writes added {added:?} to the store");
    // Each write is in the bundle's own upper layer: new content, copies up, whiteouts.
    let upper = bundle.join("upper");
    let whiteout = |name: &str| {
        let meta = fs::symlink_metadata(upper.join(name))
            .unwrap_or_else(|e| panic!("no whiteout for {name} in the upper layer: {e}"));
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        assert!(meta.file_type().is_char_device() && meta.rdev() == 0, "{name} in the upper layer is not a whiteout");
    };
    assert_eq!(fs::read_to_string(upper.join("new-file")).unwrap(), "new\n");
    assert_eq!(
        fs::read_to_string(upper.join("etc/passwd")).unwrap(),
        "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/:/bin/sh\nappended\n"
    );
    whiteout("etc/group");
    whiteout("data/second");
    whiteout("data/keep");
    assert_eq!(fs::read(upper.join("data/moved")).unwrap(), b"kept");
    assert_eq!(fs::read_to_string(upper.join("made/f")).unwrap(), "made\n");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&fs::metadata(upper.join("bin")).unwrap().permissions()) & 0o777,
        0o700
    );
    // And a second bundle of the same image sees none of them.
    let other = t.0.join("other");
    ok(&store, &["unpack", "--network", "none", "t", other.to_str().unwrap()]);
    assert_eq!(fs::read(other.join("rootfs/etc/group")).unwrap(), b"root:x:0:\napp:x:1000:\nwheel:x:10:app\n");
    assert!(!other.join("rootfs/new-file").exists() && other.join("rootfs/data/second").exists());
    for bundle in [&bundle, &other] {
        ok(&store, &["release", bundle.to_str().unwrap()]);
    }
}

#[test]
fn a_second_bundle_is_a_mount_and_a_config() {
    if !privileged("a_second_bundle_is_a_mount_and_a_config") {
        return;
    }
    let t = Temp::new();
    let (store, first, out) = try_unpack(&t, &[busybox_layer()], cmd());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let second = t.0.join("second");
    let used = |p: &Path| -> u64 {
        let out = std::process::Command::new("du").args(["-s", "-B1", "-x"]).arg(p).output().unwrap();
        String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().parse().unwrap()
    };
    let store_before = used(&store);
    ok(&store, &["unpack", "--network", "none", "t", second.to_str().unwrap()]);
    let new_bytes = used(&store) - store_before + used(&second.join("upper")) + used(&second.join("config.json"));
    assert!(new_bytes < 1 << 20, "the second bundle cost {new_bytes} bytes of disk");
    assert_eq!(
        fs::read(second.join("rootfs/bin/busybox")).unwrap().len(),
        fs::metadata("/bin/busybox").unwrap().len() as usize
    );
    let df: serde_json::Value = serde_json::from_str(&ok(&store, &["df", "--json"])).unwrap();
    let bundles = df["bundles"].as_array().unwrap();
    assert_eq!(bundles.len(), 2);
    // Shared layers count once: the total is well under two copies of busybox.
    let virtual_size = bundles[0]["virtualBytes"].as_u64().unwrap();
    assert!(df["totalBytes"].as_u64().unwrap() < virtual_size * 2 + (1 << 20), "{df}");
    for bundle in [&first, &second] {
        ok(&store, &["release", bundle.to_str().unwrap()]);
    }
}

#[test]
fn images_past_a_page_of_overlay_options_unpack() {
    if !privileged("images_past_a_page_of_overlay_options_unpack") {
        return;
    }
    let t = Temp::new();
    // 500 layers, the kernel's stacking limit: their lowerdir paths alone are far past a page.
    let layers: Vec<Vec<u8>> = (0..500)
        .map(|n| Tar::default().add(Entry::file(&format!("layer-{n}"), format!("{n}").as_bytes())).finish())
        .collect();
    let (store, bundle, out) = try_unpack(&t, &layers, cmd());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(fs::read_dir(bundle.join("rootfs")).unwrap().count(), 500);
    assert_eq!(fs::read(bundle.join("rootfs/layer-499")).unwrap(), b"499");
    ok(&store, &["release", bundle.to_str().unwrap()]);
}

#[test]
fn concurrent_unpack_release_import_and_gc_on_one_store() {
    if !privileged("concurrent_unpack_release_import_and_gc_on_one_store") {
        return;
    }
    let t = Temp::new();
    let (layout, store) = (t.0.join("layout"), t.0.join("store"));
    write_image(&layout, "t", &[busybox_layer()], cmd());
    let other = t.0.join("other");
    write_image(&other, "u", &[Tar::default().add(Entry::file("u", b"u")).finish()], cmd());
    ok(&store, &["import", layout.to_str().unwrap()]);
    let spawn = |args: Vec<String>| {
        std::process::Command::new(env!("CARGO_BIN_EXE_berth-image"))
            .arg("--store")
            .arg(&store)
            .args(args)
            .output()
            .unwrap()
    };
    let bundles: Vec<String> = (0..4).map(|n| t.0.join(format!("b{n}")).display().to_string()).collect();
    std::thread::scope(|scope| {
        let mut jobs = Vec::new();
        for bundle in &bundles {
            jobs.push(
                scope.spawn(|| {
                    spawn(vec!["unpack".into(), "--network".into(), "none".into(), "t".into(), bundle.clone()])
                }),
            );
        }
        jobs.push(scope.spawn(|| spawn(vec!["gc".into()])));
        jobs.push(scope.spawn(|| spawn(vec!["import".into(), other.display().to_string()])));
        for job in jobs {
            let out = job.join().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
    });
    let df: serde_json::Value = serde_json::from_str(&ok(&store, &["df", "--json"])).unwrap();
    assert_eq!(df["bundles"].as_array().unwrap().len(), 4);
    std::thread::scope(|scope| {
        let jobs: Vec<_> = bundles
            .iter()
            .map(|b| scope.spawn(|| spawn(vec!["release".into(), b.clone()])))
            .chain(std::iter::once(scope.spawn(|| spawn(vec!["gc".into()]))))
            .collect();
        for job in jobs {
            let out = job.join().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
    });
    assert!(bundles.iter().all(|b| !Path::new(b).exists()));
    assert_eq!(ok(&store, &["list"]).lines().count(), 2);
}

#[test]
fn a_crashed_import_leaves_no_half_image() {
    if !privileged("a_crashed_import_leaves_no_half_image") {
        return;
    }
    let t = Temp::new();
    let (layout, store) = (t.0.join("layout"), t.0.join("store"));
    let big = vec![7u8; 64 << 20];
    write_image(&layout, "big", &[Tar::default().add(Entry::file("big", &big)).finish()], cmd());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_berth-image"))
        .arg("--store")
        .arg(&store)
        .arg("import")
        .arg(&layout)
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(40));
    let _ = child.kill();
    let _ = child.wait();
    // Whatever the kill interrupted, the image is either whole or absent.
    let listed = ok(&store, &["list"]);
    if listed.is_empty() {
        assert!(err(&store, &["inspect", "big"]).contains("no image named"));
    } else {
        ok(&store, &["inspect", "big"]);
    }
    // The next locked run clears the crashed run's staging, and the import completes.
    ok(&store, &["import", layout.to_str().unwrap()]);
    assert_eq!(fs::read_dir(store.join("tmp")).unwrap().count(), 0);
    let bundle = t.0.join("bundle");
    ok(&store, &["unpack", "--network", "none", "big", bundle.to_str().unwrap()]);
    assert_eq!(fs::metadata(bundle.join("rootfs/big")).unwrap().len(), 64 << 20);
    ok(&store, &["release", bundle.to_str().unwrap()]);
}

#[test]
fn multi_member_gzip_layers_unpack_whole() {
    if !privileged("multi_member_gzip_layers_unpack_whole") {
        return;
    }
    use std::io::Write;
    let t = Temp::new();
    let tar = Tar::default().add(Entry::file("first", b"1")).add(Entry::file("second", &[b'2'; 70000])).finish();
    // Two gzip members, split in the middle of the tar stream (as pigz and some tools write).
    let mut blob = Vec::new();
    for part in [&tar[..tar.len() / 2], &tar[tar.len() / 2..]] {
        let mut member = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        member.write_all(part).unwrap();
        blob.extend(member.finish().unwrap());
    }
    let (layout, store, bundle) = (t.0.join("layout"), t.0.join("store"), t.0.join("bundle"));
    common::write_image_blobs(
        &layout,
        "t",
        &[(blob, common::digest(&tar), "application/vnd.oci.image.layer.v1.tar+gzip")],
        cmd(),
    );
    ok(&store, &["import", layout.to_str().unwrap()]);
    ok(&store, &["unpack", "--network", "none", "t", bundle.to_str().unwrap()]);
    assert_eq!(fs::read(bundle.join("rootfs/second")).unwrap().len(), 70000);
    ok(&store, &["release", bundle.to_str().unwrap()]);
    // A layer whose content does not match its DiffID is refused and leaves no layer.
    let t2 = Temp::new();
    let (layout, store, bundle) = (t2.0.join("layout"), t2.0.join("store"), t2.0.join("bundle"));
    common::write_image_blobs(
        &layout,
        "t",
        &[(tar.clone(), common::digest(b"something else"), "application/vnd.oci.image.layer.v1.tar")],
        cmd(),
    );
    ok(&store, &["import", layout.to_str().unwrap()]);
    let e = err(&store, &["unpack", "--network", "none", "t", bundle.to_str().unwrap()]);
    assert!(e.contains("DiffID"), "{e}");
    nothing_left(&store, &bundle);
    assert_eq!(fs::read_dir(store.join("layers")).unwrap().count(), 0);
}
