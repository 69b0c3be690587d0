//! `berth-image cp` as a Docker user runs it: files, directories and tar streams into and
//! out of a bundle made by `unpack`, stopped (rootfs and bind sources from config.json, a
//! tmpfs refused) and running under berth (the container's own view, tmpfs included), with
//! Docker's naming and owner rules, and no way out of the container through a symlink, `..`,
//! a hostile tar entry or a symlink swapped in during the copy (CVE-2018-15664's shape).

mod common;
use common::{busybox_layer, ok, privileged, write_image, Temp};
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A store, and a bundle of a busybox image with `/etc/app/conf`, made as a Docker user
/// makes it: `-v <t>/volume:/data` (a bind mount) and `--tmpfs /scratch`; the container
/// runs `script`.
fn bundle(t: &Temp, script: &str) -> (PathBuf, PathBuf) {
    let (layout, store, bundle) = (t.0.join("layout"), t.0.join("store"), t.0.join("bundle"));
    let mut app = common::Tar::default();
    app.add(common::Entry::dir("etc/app")).add(common::Entry::file("etc/app/conf", b"port=80\n"));
    write_image(&layout, "t", &[busybox_layer(), app.finish()], serde_json::json!({ "Cmd": ["sh", "-c", script] }));
    ok(&store, &["import", layout.to_str().unwrap()]);
    let volume = t.0.join("volume");
    fs::create_dir(&volume).unwrap();
    fs::write(volume.join("kept"), "in the volume\n").unwrap();
    let bind = format!("{}:/data", volume.display());
    ok(&store, &["unpack", "t", bundle.to_str().unwrap(), "-v", &bind, "--tmpfs", "/scratch:size=1m"]);
    (store, bundle)
}

/// `berth-image cp ARGS...` with `stdin` fed to it.
fn cp(store: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth-image"))
        .arg("--store")
        .arg(store)
        .arg("cp")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn cp_ok(store: &Path, args: &[&str]) -> Vec<u8> {
    let out = cp(store, args, b"");
    assert!(out.status.success(), "cp {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn cp_err(store: &Path, args: &[&str]) -> String {
    let out = cp(store, args, b"");
    assert!(!out.status.success(), "cp {args:?} unexpectedly succeeded");
    String::from_utf8(out.stderr).unwrap()
}

fn at(bundle: &Path, path: &str) -> String {
    format!("{}:{path}", bundle.display())
}

fn tar_names(archive: &[u8]) -> Vec<String> {
    let mut child =
        Command::new("tar").args(["-tf", "-"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(archive).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "not a tar archive");
    String::from_utf8(out.stdout).unwrap().lines().map(String::from).collect()
}

#[test]
fn copies_into_and_out_of_a_stopped_bundle_follow_dockers_rules() {
    if !privileged("copies_into_and_out_of_a_stopped_bundle_follow_dockers_rules") {
        return;
    }
    let t = Temp::new();
    let (store, bundle) = bundle(&t, "true");
    let rootfs = bundle.join("rootfs");

    // A host file owned by someone else lands owned by root (Docker's rule); -a keeps owners.
    let site = t.0.join("site");
    fs::create_dir_all(site.join("css")).unwrap();
    fs::write(site.join("index.html"), "<h1>hi</h1>\n").unwrap();
    fs::write(site.join("css/main.css"), "body{}\n").unwrap();
    std::os::unix::fs::symlink("index.html", site.join("home.html")).unwrap();
    common::sh(&format!("chown -R 1234:1234 '{0}' && chmod 0640 '{0}/index.html'", site.display()));
    cp_ok(&store, &[site.join("index.html").to_str().unwrap(), &at(&bundle, "/etc/app")]);
    let copied = fs::metadata(rootfs.join("etc/app/index.html")).unwrap();
    assert_eq!((copied.uid(), copied.gid(), copied.mode() & 0o7777), (0, 0, 0o640));
    cp_ok(&store, &["-a", site.join("index.html").to_str().unwrap(), &at(&bundle, "/etc/app/kept-owner.html")]);
    assert_eq!(fs::metadata(rootfs.join("etc/app/kept-owner.html")).unwrap().uid(), 1234);

    // A directory onto a missing path becomes it; into an existing directory it goes under
    // its own name; DIR/. copies the contents.
    cp_ok(&store, &[site.to_str().unwrap(), &at(&bundle, "/etc/www")]);
    assert_eq!(fs::read_to_string(rootfs.join("etc/www/css/main.css")).unwrap(), "body{}\n");
    assert_eq!(fs::read_link(rootfs.join("etc/www/home.html")).unwrap(), Path::new("index.html"));
    cp_ok(&store, &[site.to_str().unwrap(), &at(&bundle, "/etc/www")]);
    assert!(rootfs.join("etc/www/site/index.html").is_file());
    cp_ok(&store, &[&format!("{}/.", site.display()), &at(&bundle, "/etc/app")]);
    assert!(rootfs.join("etc/app/css/main.css").is_file());

    // Out: into an existing host directory under the name, owned by the caller; a file onto
    // a new name; a tar stream on stdout.
    let out = t.0.join("out");
    fs::create_dir(&out).unwrap();
    cp_ok(&store, &[&at(&bundle, "/etc/app/conf"), out.to_str().unwrap()]);
    assert_eq!(fs::read_to_string(out.join("conf")).unwrap(), "port=80\n");
    cp_ok(&store, &[&at(&bundle, "/etc/www/index.html"), out.join("renamed.html").to_str().unwrap()]);
    assert_eq!(fs::metadata(out.join("renamed.html")).unwrap().uid(), 0);
    let names = tar_names(&cp_ok(&store, &[&at(&bundle, "/etc/www/css"), "-"]));
    assert_eq!(names, ["css/", "css/main.css"]);

    // A tar stream on stdin is extracted into an existing directory.
    let mut archive = common::Tar::default();
    archive.add(common::Entry::dir("conf.d")).add(common::Entry::file("conf.d/extra", b"extra\n"));
    let fed = cp(&store, &["-", &at(&bundle, "/etc/app")], &archive.finish());
    assert!(fed.status.success(), "{}", String::from_utf8_lossy(&fed.stderr));
    assert_eq!(fs::read_to_string(rootfs.join("etc/app/conf.d/extra")).unwrap(), "extra\n");

    // Bind mounts (volumes) resolve to their sources, both ways.
    cp_ok(&store, &[&at(&bundle, "/data/kept"), out.join("kept").to_str().unwrap()]);
    assert_eq!(fs::read_to_string(out.join("kept")).unwrap(), "in the volume\n");
    cp_ok(&store, &[out.join("conf").to_str().unwrap(), &at(&bundle, "/data/")]);
    assert!(t.0.join("volume/conf").is_file() && !rootfs.join("data/conf").exists());

    // A file bound over a file (the init layer's /etc/hosts) is copied from its source once
    // stopped; a path through `..` under a volume is that path, not the whole volume.
    cp_ok(&store, &[&at(&bundle, "/etc/hosts"), out.join("hosts").to_str().unwrap()]);
    assert_eq!(fs::read(out.join("hosts")).unwrap(), fs::read(bundle.join("hosts")).unwrap());
    cp_ok(&store, &[&at(&bundle, "/etc/../data/kept"), out.join("kept-again").to_str().unwrap()]);
    assert_eq!(fs::read_to_string(out.join("kept-again")).unwrap(), "in the volume\n");

    // Out of the container without -a: no device node and no setuid bit reach the host.
    fs::create_dir(rootfs.join("planted")).unwrap();
    common::sh(&format!(
        "mknod '{0}/planted/disk' b 8 0 && cp /bin/busybox '{0}/planted/suid' && chmod 4755 '{0}/planted/suid'",
        rootfs.display()
    ));
    cp_ok(&store, &[&at(&bundle, "/planted"), out.to_str().unwrap()]);
    assert!(!out.join("planted/disk").exists(), "a device node was copied onto the host");
    assert_eq!(fs::metadata(out.join("planted/suid")).unwrap().mode() & 0o7777, 0o755);
    cp_ok(&store, &["-a", &at(&bundle, "/planted"), out.join("archived").to_str().unwrap()]);
    assert_eq!(fs::metadata(out.join("archived/suid")).unwrap().mode() & 0o7777, 0o4755, "-a keeps the mode");

    // A tmpfs exists only while the container runs.
    let refused = cp_err(&store, &[out.join("conf").to_str().unwrap(), &at(&bundle, "/scratch/")]);
    assert!(refused.contains("tmpfs mount at /scratch") && refused.contains("start it"), "{refused}");

    // Clear errors for impossible copies.
    assert!(cp_err(&store, &[out.to_str().unwrap(), out.join("x").to_str().unwrap()]).contains("BUNDLE:PATH"));
    assert!(cp_err(&store, &[&at(&bundle, "/no/such"), out.to_str().unwrap()]).contains("no such file"));
    assert!(cp_err(&store, &[&at(&bundle, "/etc/app"), out.join("conf").to_str().unwrap()])
        .contains("cannot copy the directory"));
    assert!(
        cp_err(&store, &[out.join("conf").to_str().unwrap(), &at(&bundle, "/missing/dir/")]).contains("does not exist")
    );
}

#[test]
fn no_path_or_archive_leads_out_of_a_stopped_container() {
    if !privileged("no_path_or_archive_leads_out_of_a_stopped_container") {
        return;
    }
    let t = Temp::new();
    let (store, bundle) = bundle(&t, "true");
    let rootfs = bundle.join("rootfs");
    let host = t.0.join("host");
    fs::create_dir(&host).unwrap();
    fs::write(host.join("secret"), "HOST\n").unwrap();
    let before = common::snapshot(&host);
    let out = t.0.join("out");
    fs::create_dir(&out).unwrap();

    // An absolute symlink to a host path resolves inside the rootfs, where it dangles.
    std::os::unix::fs::symlink(&host, rootfs.join("link")).unwrap();
    cp_err(&store, &[&at(&bundle, "/link/secret"), out.to_str().unwrap()]);
    cp_err(&store, &[out.to_str().unwrap(), &at(&bundle, "/link/")]);
    // `..` stops at the container's root.
    let climb = format!("/../../../../../..{}", host.join("secret").display());
    cp_err(&store, &[&at(&bundle, &climb), out.to_str().unwrap()]);
    // A relative symlink climbing out, followed with -L, stays inside too.
    std::os::unix::fs::symlink("../../../../../../../../etc/app/conf", rootfs.join("climber")).unwrap();
    cp_ok(&store, &["-L", &at(&bundle, "/climber"), out.join("climbed").to_str().unwrap()]);
    assert_eq!(fs::read_to_string(out.join("climbed")).unwrap(), "port=80\n");

    // Hostile tar entries on stdin: `..`, and a symlink followed by a write through it.
    let mut climbing = common::Tar::default();
    climbing.add(common::Entry::file("../../../escaped", b"x"));
    let mut through_link = common::Tar::default();
    through_link
        .add(common::Entry::symlink("hop", host.to_str().unwrap()))
        .add(common::Entry::file("hop/planted", b"x"));
    for archive in [climbing.finish(), through_link.finish()] {
        let fed = cp(&store, &["-", &at(&bundle, "/etc/app")], &archive);
        assert!(!fed.status.success(), "a hostile archive was accepted");
    }
    assert_eq!(common::snapshot(&host), before, "the host directory was written");
    assert_eq!(fs::read_dir(&out).unwrap().count(), 1, "something but the -L copy came out");
    assert!(!t.0.join("escaped").exists());
}

#[test]
fn a_running_container_is_copied_through_its_own_mounts_and_a_swapped_symlink_never_leads_out() {
    if !privileged("a_running_container_is_copied_through_its_own_mounts_and_a_swapped_symlink_never_leads_out") {
        return;
    }
    let t = Temp::new();
    let host = t.0.join("host");
    fs::create_dir(&host).unwrap();
    fs::write(host.join("f"), "HOST\n").unwrap();
    // The container swaps /race between a directory and a symlink to the host's directory
    // as fast as it can (CVE-2018-15664's shape).
    let script = format!(
        "echo inside > /scratch/note; mkdir /race; echo inside > /race/f; \
         while :; do mv /race /race.real; /bin/busybox ln -s {0} /race; rm /race; mv /race.real /race; done",
        host.display()
    );
    let (store, bundle) = bundle(&t, &script);
    let berth = berth_tests::runtime::Berth::new("image-cp");
    let id = berth_tests::fixtures::container_id("image-cp");
    berth.ok(&["run", "--detach", "--bundle", bundle.to_str().unwrap(), &id]);
    let out = t.0.join("out");
    fs::create_dir(&out).unwrap();

    // The tmpfs is the container's own: reached through its mount namespace.
    let note = out.join("note");
    for _ in 0..500 {
        if cp(&store, &[&at(&bundle, "/scratch/note"), note.to_str().unwrap()], b"").status.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(fs::read_to_string(&note).unwrap(), "inside\n");
    cp_ok(&store, &[note.to_str().unwrap(), &at(&bundle, "/scratch/from-host")]);
    let seen = berth.ok(&["exec", &id, "cat", "/scratch/from-host"]);
    assert_eq!(seen, "inside\n");
    assert!(!bundle.join("rootfs/scratch/from-host").exists(), "the copy went under the tmpfs, not into it");

    let payload = t.0.join("payload");
    fs::write(&payload, "planted\n").unwrap();
    let (mut read_inside, mut failed) = (0, 0);
    for round in 0..300 {
        let target = out.join(format!("f{round}"));
        let copied = cp(&store, &[&at(&bundle, "/race/f"), target.to_str().unwrap()], b"");
        if copied.status.success() {
            assert_eq!(fs::read_to_string(&target).unwrap(), "inside\n", "the host's file came out of the container");
            read_inside += 1;
        } else {
            failed += 1;
        }
        let _ = cp(&store, &[payload.to_str().unwrap(), &at(&bundle, "/race/")], b"");
        assert!(!host.join("payload").exists(), "a copy into the container wrote the host's directory");
    }
    assert_eq!(fs::read_to_string(host.join("f")).unwrap(), "HOST\n");
    eprintln!("race: {read_inside} copies read the container's file, {failed} found the symlink");

    berth.ok(&["kill", &id, "KILL"]);
    berth.wait_status(&id, "stopped");
    let refused = cp_err(&store, &[note.to_str().unwrap(), &at(&bundle, "/scratch/")]);
    assert!(refused.contains("exists only while the container runs"), "{refused}");
    berth.ok(&["delete", &id]);
    ok(&store, &["release", bundle.to_str().unwrap()]);
}
