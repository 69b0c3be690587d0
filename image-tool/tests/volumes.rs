//! unpack's storage options as a Docker user runs them, the bundles run with berth: named
//! volumes filled from the image when empty (and only then, and not with nocopy), kept over a
//! release and mounted again by the bundle that replaces it; image VOLUMEs and `-v /CTR` as
//! anonymous volumes that `release --volumes` removes; read-only binds; tmpfs sizes; the
//! `volume` commands refusing volumes in use; `df` listing volumes; bad options leaving
//! nothing behind.

mod common;
use common::{busybox_layer, err, ok, privileged, write_image, Entry, Tar, Temp};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The image's `/data`: a file with an owner, mode and xattr, a private subdirectory, a
/// symlink within and one pointing out of the container (copied as a link, never followed).
fn data_layer() -> Vec<u8> {
    let mut tar = Tar::default();
    tar.add(Entry { mode: 0o770, uid: 1000, gid: 10, ..Entry::dir("data") })
        .pax(&[("SCHILY.xattr.user.berth", b"seeded")])
        .add(Entry { mode: 0o640, uid: 1000, gid: 1000, ..Entry::file("data/seed", b"from the image\n") })
        .add(Entry { mode: 0o750, uid: 7, gid: 8, ..Entry::dir("data/sub") })
        .add(Entry::file("data/sub/deep", b"deep\n"))
        .add(Entry::symlink("data/link", "seed"))
        .add(Entry::symlink("data/out", "../../../../../etc"))
        .add(Entry::hardlink("data/seed-again", "data/seed"));
    tar.finish()
}

/// A store with image `t` (busybox and `data_layer`, `extra` merged into its config) whose
/// command runs `/script/run.sh`, which the tests bind from the host.
fn store_with_image(t: &Temp, extra: serde_json::Value) -> PathBuf {
    let (layout, store) = (t.0.join("layout"), t.0.join("store"));
    let mut config = serde_json::json!({ "Cmd": ["sh", "/script/run.sh"] });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    write_image(&layout, "t", &[busybox_layer(), data_layer()], config);
    ok(&store, &["import", layout.to_str().unwrap()]);
    store
}

/// A host directory holding `run.sh` with `script`; returns the `-v` binding it at /script.
fn script(t: &Temp, name: &str, script: &str) -> String {
    let dir = t.0.join(name);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("run.sh"), script).unwrap();
    format!("{}:/script:ro", dir.display())
}

fn unpack(store: &Path, bundle: &Path, options: &[&str]) {
    let mut args = vec!["unpack", "t", bundle.to_str().unwrap()];
    args.extend_from_slice(options);
    ok(store, &args);
}

/// Runs the bundle with berth; returns its stdout, asserting it exited 0.
fn run(berth: &berth_tests::runtime::Berth, bundle: &Path) -> String {
    let id = berth_tests::fixtures::container_id("image-volumes");
    let (code, stdout, stderr) = berth.run_bundle(bundle, &id);
    assert_eq!(code, 0, "the container failed: {stdout}{stderr}");
    stdout
}

fn json(store: &Path, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ok(store, args)).unwrap()
}

#[test]
fn an_empty_named_volume_is_filled_from_the_image_once_and_outlives_its_bundle() {
    if !privileged("an_empty_named_volume_is_filled_from_the_image_once_and_outlives_its_bundle") {
        return;
    }
    let t = Temp::new();
    let berth = berth_tests::runtime::Berth::new("image-volumes");
    let store = store_with_image(&t, serde_json::json!({}));
    let first = t.0.join("first");
    let bind = script(&t, "s1", "cat /data/seed; rm /data/seed; echo kept > /data/written");
    unpack(&store, &first, &["-v", &bind, "-v", "data:/data"]);
    // Copied in before the container ran: kinds, owners, modes, xattrs, links.
    let data = store.join("volumes/data/_data");
    let meta = |p: &str| fs::symlink_metadata(data.join(p)).unwrap();
    assert_eq!((meta(".").mode() & 0o7777, meta(".").uid(), meta(".").gid()), (0o770, 1000, 10));
    assert_eq!((meta("seed").mode() & 0o7777, meta("seed").uid(), meta("seed").gid()), (0o640, 1000, 1000));
    assert_eq!(common::xattrs(&data.join("seed")).get("user.berth").map(Vec::as_slice), Some(&b"seeded"[..]));
    assert_eq!((meta("sub").mode() & 0o7777, meta("sub").uid(), meta("sub").gid()), (0o750, 7, 8));
    assert_eq!(fs::read_to_string(data.join("sub/deep")).unwrap(), "deep\n");
    assert_eq!(fs::read_link(data.join("link")).unwrap(), Path::new("seed"));
    assert_eq!(fs::read_link(data.join("out")).unwrap(), Path::new("../../../../../etc"));
    assert_eq!(meta("seed-again").ino(), meta("seed").ino(), "the hard link was not kept");
    assert_eq!(run(&berth, &first), "from the image\n");
    // In use: neither rm nor prune --all takes it.
    let refused = err(&store, &["volume", "rm", "data"]);
    assert!(refused.contains("in use") && refused.contains(first.to_str().unwrap()), "{refused}");
    ok(&store, &["volume", "prune", "--all"]);
    assert!(data.join("written").is_file(), "a volume in use was removed");
    // Released, the volume stays with the container's writes.
    ok(&store, &["release", first.to_str().unwrap()]);
    assert_eq!(fs::read_to_string(data.join("written")).unwrap(), "kept\n");
    let inspect = json(&store, &["volume", "inspect", "data"]);
    assert_eq!(inspect[0]["Name"], "data");
    assert_eq!(inspect[0]["Mountpoint"], data.to_str().unwrap());
    assert_eq!(inspect[0]["Driver"], "local");
    assert!(inspect[0]["CreatedAt"].as_str().unwrap().ends_with('Z'), "{inspect}");
    // The replacement mounts the same volume, not empty now: nothing is copied over it.
    let second = t.0.join("second");
    let bind = script(&t, "s2", "cat /data/written; cat /data/seed 2>/dev/null || echo no-seed");
    unpack(&store, &second, &["-v", &bind, "--mount", "type=volume,source=data,target=/data"]);
    assert_eq!(run(&berth, &second), "kept\nno-seed\n");
    ok(&store, &["release", second.to_str().unwrap()]);
    // nocopy, in both forms, leaves a new volume empty.
    let third = t.0.join("third");
    unpack(
        &store,
        &third,
        &["-v", "short:/data:nocopy", "--mount", "type=volume,src=long,dst=/data/sub,volume-nocopy"],
    );
    for name in ["short", "long"] {
        assert_eq!(fs::read_dir(store.join("volumes").join(name).join("_data")).unwrap().count(), 0, "{name}");
    }
    ok(&store, &["release", third.to_str().unwrap()]);
    // One made ahead with `volume create` (labels kept; again is no error) is filled the same.
    assert_eq!(ok(&store, &["volume", "create", "--label", "tier=db", "made"]), "made\n");
    assert_eq!(ok(&store, &["volume", "create", "made"]), "made\n");
    assert_eq!(json(&store, &["volume", "inspect", "made"])[0]["Labels"], serde_json::json!({"tier": "db"}));
    let fourth = t.0.join("fourth");
    unpack(&store, &fourth, &["-v", "made:/data"]);
    assert_eq!(fs::read_to_string(store.join("volumes/made/_data/seed")).unwrap(), "from the image\n");
    ok(&store, &["release", fourth.to_str().unwrap()]);
    // Unnamed, it gets a random name, and is no anonymous volume: plain prune keeps it.
    let random = ok(&store, &["volume", "create"]).trim().to_string();
    assert_eq!(random.len(), 64, "{random}");
    ok(&store, &["volume", "prune"]);
    let listed = ok(&store, &["volume", "ls"]);
    let mut names = [random.as_str(), "data", "long", "made", "short"];
    names.sort();
    let rows: String = names.iter().map(|name| format!("local\t{name}\n")).collect();
    assert_eq!(listed, format!("DRIVER\tVOLUME NAME\n{rows}"));
    ok(&store, &["volume", "rm", "data", "short", "long", "made", &random]);
    assert_eq!(json(&store, &["volume", "ls", "--json"]), serde_json::json!([]));
    assert_eq!(fs::read_dir(store.join("volumes")).unwrap().count(), 0);
}

#[test]
fn image_volumes_and_bare_paths_are_anonymous_volumes_that_release_volumes_removes() {
    if !privileged("image_volumes_and_bare_paths_are_anonymous_volumes_that_release_volumes_removes") {
        return;
    }
    let t = Temp::new();
    let berth = berth_tests::runtime::Berth::new("image-volumes");
    let store = store_with_image(&t, serde_json::json!({ "Volumes": { "/data": {} } }));
    let bundle = t.0.join("bundle");
    let bind = script(&t, "s", "cat /data/seed; echo cache > /cache/c; echo named > /named/n");
    unpack(&store, &bundle, &["-v", &bind, "-v", "/cache", "-v", "named:/named"]);
    assert_eq!(run(&berth, &bundle), "from the image\n");
    let volumes = json(&store, &["volume", "ls", "--json"]);
    let anonymous: Vec<String> = volumes
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["Anonymous"] == true)
        .map(|v| v["Name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(anonymous.len(), 2, "{volumes}");
    assert!(anonymous.iter().all(|n| n.len() == 64 && n.chars().all(|c| c.is_ascii_hexdigit())), "{anonymous:?}");
    let holding = |file: &str| {
        anonymous.iter().filter(|n| store.join("volumes").join(n).join("_data").join(file).exists()).count()
    };
    assert_eq!((holding("seed"), holding("c")), (1, 1), "the image's /data and /cache are not one volume each");
    // df lists each volume with its size and users.
    let df = json(&store, &["df", "--json"]);
    let listed = df["volumes"].as_array().unwrap();
    assert_eq!(listed.len(), 3, "{df}");
    assert!(listed.iter().all(|v| v["bundles"] == 1 && v["bytes"].as_u64().unwrap() > 0), "{df}");
    let table = ok(&store, &["df"]);
    assert!(table.contains("VOLUME\tSIZE\tBUNDLES") && table.contains("\nnamed\t"), "{table}");
    // Prune keeps what a bundle uses; a plain release keeps the volumes.
    ok(&store, &["volume", "prune"]);
    assert_eq!(json(&store, &["volume", "ls", "--json"]).as_array().unwrap().len(), 3);
    ok(&store, &["release", bundle.to_str().unwrap()]);
    assert_eq!(json(&store, &["volume", "ls", "--json"]).as_array().unwrap().len(), 3);
    // Unused now: prune takes the anonymous ones only.
    assert_eq!(ok(&store, &["volume", "prune"]).lines().count(), 2);
    assert_eq!(ok(&store, &["volume", "ls"]), "DRIVER\tVOLUME NAME\nlocal\tnamed\n");
    // release --volumes removes the bundle's anonymous volumes, never a named one.
    unpack(&store, &bundle, &["-v", "/cache", "-v", "named:/named"]);
    assert_eq!(json(&store, &["volume", "ls", "--json"]).as_array().unwrap().len(), 3);
    ok(&store, &["release", "--volumes", bundle.to_str().unwrap()]);
    assert_eq!(ok(&store, &["volume", "ls"]), "DRIVER\tVOLUME NAME\nlocal\tnamed\n");
    assert_eq!(fs::read_to_string(store.join("volumes/named/_data/n")).unwrap(), "named\n");
}

#[test]
fn binds_are_read_only_when_asked_and_tmpfs_mounts_have_their_size() {
    if !privileged("binds_are_read_only_when_asked_and_tmpfs_mounts_have_their_size") {
        return;
    }
    let t = Temp::new();
    let berth = berth_tests::runtime::Berth::new("image-volumes");
    let store = store_with_image(&t, serde_json::json!({}));
    let (readonly, writable, made) = (t.0.join("ro"), t.0.join("rw"), t.0.join("made/by/v"));
    fs::create_dir(&readonly).unwrap();
    fs::write(readonly.join("given"), "from the host\n").unwrap();
    fs::create_dir(&writable).unwrap();
    let bundle = t.0.join("bundle");
    let bind = script(
        &t,
        "s",
        "cat /ro/given; (echo x > /ro/new) 2>/dev/null && echo wrote || echo refused; echo y > /rw/out; echo z > /made/out
         busybox grep -E ' /(scratch|sized) ' /proc/mounts | busybox cut -d' ' -f2,4",
    );
    unpack(
        &store,
        &bundle,
        &[
            "-v",
            &bind,
            "-v",
            &format!("{}:/ro:ro", readonly.display()),
            "--mount",
            &format!("type=bind,src={},dst=/rw", writable.display()),
            "-v",
            &format!("{}:/made", made.display()),
            "--tmpfs",
            "/scratch:size=1m,mode=700",
            "--mount",
            "type=tmpfs,destination=/sized,tmpfs-size=2m",
        ],
    );
    let out = run(&berth, &bundle);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..2], ["from the host", "refused"], "{out}");
    assert!(!readonly.join("new").exists(), "a write went through a read-only bind");
    assert_eq!(fs::read_to_string(writable.join("out")).unwrap(), "y\n");
    assert_eq!(fs::read_to_string(made.join("out")).unwrap(), "z\n", "-v did not make its missing host directory");
    let scratch = lines.iter().find(|l| l.starts_with("/scratch ")).unwrap_or_else(|| panic!("no /scratch: {out}"));
    assert!(scratch.contains("size=1024k") && scratch.contains("mode=700") && scratch.contains("noexec"), "{out}");
    let sized = lines.iter().find(|l| l.starts_with("/sized ")).unwrap_or_else(|| panic!("no /sized: {out}"));
    assert!(sized.contains("size=2048k"), "{out}");
    ok(&store, &["release", bundle.to_str().unwrap()]);
}

#[test]
fn bad_storage_options_get_one_clear_error_and_leave_nothing_behind() {
    if !privileged("bad_storage_options_get_one_clear_error_and_leave_nothing_behind") {
        return;
    }
    let t = Temp::new();
    let store = store_with_image(&t, serde_json::json!({ "Volumes": { "/data": {} } }));
    let bundle = t.0.join("bundle");
    let missing = t.0.join("missing");
    let missing_bind = format!("type=bind,src={},dst=/x", missing.display());
    let cases: &[(&[&str], &str)] = &[
        (&["-v", "new:/a", "-v", "a:b:c:d"], "too many colons"),
        (&["-v", "new:relative"], "must be absolute"),
        (&["-v", "./dir:/x"], "not a valid volume name"),
        (&["-v", "new:/x:bogus"], "unknown option \"bogus\""),
        (&["-v", "new:/a", "--mount", "type=volume,src=v2,dst=/b,colour=red"], "unknown key \"colour\""),
        (&["--mount", "type=bind,target=/x"], "needs an absolute source"),
        (&["--tmpfs", "/t:size=lots"], "tmpfs option \"size=lots\""),
        (&["-v", "new:/a", "-v", "/a"], "duplicate mount point /a"),
        (&["-v", "new:/a", "--mount", &missing_bind], "does not exist"),
    ];
    for (options, says) in cases {
        let mut args = vec!["unpack", "t", bundle.to_str().unwrap()];
        args.extend_from_slice(options);
        let stderr = err(&store, &args);
        assert!(stderr.contains(says) && stderr.lines().count() == 1, "{options:?}: expected {says:?}, got {stderr}");
        assert!(!bundle.exists(), "{options:?} left the bundle directory");
        assert!(!missing.exists(), "{options:?} created the missing bind source");
        assert_eq!(json(&store, &["volume", "ls", "--json"]), serde_json::json!([]), "{options:?} left a volume");
        assert_eq!(json(&store, &["df", "--json"])["bundles"], serde_json::json!([]), "{options:?} left a record");
        assert_eq!(fs::read_dir(store.join("tmp")).unwrap().count(), 0, "{options:?} left staging");
    }
    // A failure while the volumes are made (here a broken volume of the store, after the new
    // one was made and filled) takes back the volume it made.
    fs::create_dir_all(store.join("volumes/broken")).unwrap();
    // A bind source -v made goes too.
    let made_bind = format!("{}/sub:/m", missing.display());
    let stderr =
        err(&store, &["unpack", "t", bundle.to_str().unwrap(), "-v", "new:/data", "-v", &made_bind, "-v", "broken:/b"]);
    assert!(stderr.contains("cannot open volume broken's"), "{stderr}");
    assert!(!bundle.exists() && !store.join("volumes/new").exists(), "the failed unpack left its volume or bundle");
    assert!(!missing.exists(), "the failed unpack left the bind source it made");
    assert_eq!(fs::read_dir(store.join("volumes")).unwrap().count(), 1, "only the broken volume stays");
    assert_eq!(json(&store, &["df", "--json"])["bundles"], serde_json::json!([]));
    assert!(!fs::read_to_string("/proc/self/mountinfo").unwrap().contains(bundle.to_str().unwrap()));
    // Volume commands refuse what does not exist or is not a name.
    assert!(err(&store, &["volume", "rm", "nothere"]).contains("no volume named \"nothere\""));
    assert!(err(&store, &["volume", "inspect", "../x"]).contains("not a valid volume name"));
    assert!(err(&store, &["volume", "create", "x"]).contains("not a valid volume name"));
}

#[test]
fn a_volume_path_through_an_image_symlink_resolves_inside_the_image() {
    if !privileged("a_volume_path_through_an_image_symlink_resolves_inside_the_image") {
        return;
    }
    let t = Temp::new();
    // A host directory the image's symlinks aim at, absolutely and with `..`.
    let secret = t.0.join("secret");
    fs::create_dir(&secret).unwrap();
    fs::write(secret.join("key"), "host secret\n").unwrap();
    let (absolute, climbing) = (secret.display().to_string(), format!("../../../../../../../..{}", secret.display()));
    let links = Tar::default()
        .add(Entry::symlink("absolute", &absolute))
        .add(Entry::symlink("climbing", &climbing))
        .add(Entry::symlink("alias", "data"))
        .finish();
    let (layout, store, bundle) = (t.0.join("layout"), t.0.join("store"), t.0.join("bundle"));
    write_image(&layout, "t", &[busybox_layer(), data_layer(), links], serde_json::json!({ "Cmd": ["sh"] }));
    ok(&store, &["import", layout.to_str().unwrap()]);
    let before = common::snapshot(&secret);
    unpack(&store, &bundle, &["-v", "abs:/absolute", "-v", "up:/climbing", "-v", "alias:/alias"]);
    for name in ["abs", "up"] {
        let data = store.join("volumes").join(name).join("_data");
        assert_eq!(fs::read_dir(&data).unwrap().count(), 0, "volume {name} was filled from outside the image");
    }
    assert_eq!(common::snapshot(&secret), before, "the host directory was touched");
    // A symlink within the image leads where it leads in the container: the image's /data.
    assert_eq!(fs::read_to_string(store.join("volumes/alias/_data/seed")).unwrap(), "from the image\n");
    ok(&store, &["release", bundle.to_str().unwrap()]);
}

#[test]
fn an_image_tree_too_deep_to_copy_is_refused_and_leaves_nothing() {
    if !privileged("an_image_tree_too_deep_to_copy_is_refused_and_leaves_nothing") {
        return;
    }
    let t = Temp::new();
    let mut tar = Tar::default();
    let mut path = String::from("data");
    for _ in 0..300 {
        path.push_str("/d");
        tar.pax(&[("path", path.as_bytes())]).add(Entry::dir("long-name-in-pax"));
    }
    let (layout, store, bundle) = (t.0.join("layout"), t.0.join("store"), t.0.join("bundle"));
    write_image(&layout, "t", &[busybox_layer(), tar.finish()], serde_json::json!({ "Cmd": ["sh"] }));
    ok(&store, &["import", layout.to_str().unwrap()]);
    let stderr = err(&store, &["unpack", "t", bundle.to_str().unwrap(), "-v", "deep:/data"]);
    assert!(stderr.contains("more than 256 directories deep"), "{stderr}");
    assert!(!bundle.exists() && !store.join("volumes/deep").exists(), "the refused unpack left its bundle or volume");
    assert_eq!(fs::read_dir(store.join("tmp")).unwrap().count(), 0, "staging left behind");
    assert!(!fs::read_to_string("/proc/self/mountinfo").unwrap().contains(bundle.to_str().unwrap()));
}
