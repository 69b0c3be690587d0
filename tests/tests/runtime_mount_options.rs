//! runc's mount options as berth applies them, one family per test, each seen from inside
//! a busybox container: the kernel's mount table (/proc/self/mountinfo: per-mount and
//! superblock options, submounts of recursive bind mounts) or behaviour (exec, symlinks,
//! copied-up files); and `berth features` against `runc features`.

use std::collections::BTreeSet;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use berth_tests::fixtures::{container_id, Bundle, TempDir};
use berth_tests::privilege::{have_program, missing, require_root};
use berth_tests::runtime::Berth;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use serde_json::json;

/// mount(2)'s MS_NOSYMFOLLOW (Linux 5.10), which nix does not name.
const MS_NOSYMFOLLOW: MsFlags = MsFlags::from_bits_retain(256);

/// A mount the test makes on the host (a bind source), unmounted on drop.
struct HostTmpfs(PathBuf);

impl HostTmpfs {
    fn mount(path: &Path, flags: MsFlags) -> HostTmpfs {
        std::fs::create_dir_all(path).unwrap();
        mount(Some("tmpfs"), path, Some("tmpfs"), MsFlags::empty(), Some("size=16m")).unwrap();
        let guard = HostTmpfs(path.to_path_buf());
        if !flags.is_empty() {
            mount(None::<&str>, path, None::<&str>, MsFlags::MS_REMOUNT | MsFlags::MS_BIND | flags, None::<&str>)
                .unwrap();
        }
        guard
    }
}

impl Drop for HostTmpfs {
    fn drop(&mut self) {
        let _ = umount2(&self.0, MntFlags::MNT_DETACH);
    }
}

/// Adds a mount to the bundle's spec (the destination made in the rootfs).
fn add_mount(bundle: &mut Bundle, destination: &str, typ: &str, source: &str, options: &[&str]) {
    let _ = std::fs::create_dir_all(bundle.rootfs().join(destination.trim_start_matches('/')));
    bundle.spec["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": destination, "type": typ, "source": source, "options": options}));
}

/// Runs the bundle and returns its stdout, asserting exit code 0.
fn run_ok(bundle: &Bundle, name: &str) -> String {
    bundle.write_spec();
    let berth = Berth::new(name);
    let id = container_id(name);
    let (code, stdout, stderr) = berth.run_bundle(bundle.path(), &id);
    assert_eq!(code, 0, "container {id} failed: stdout {stdout:?} stderr {stderr:?}");
    stdout
}

/// One mount as mountinfo shows it.
struct Shown {
    line: String,
    per_mount: BTreeSet<String>,
    superblock: BTreeSet<String>,
}

impl Shown {
    fn has(&self, option: &str) -> bool {
        self.per_mount.contains(option)
    }

    /// The access-time mode shown: noatime, relatime, or strictatime (neither shown).
    fn atime(&self) -> &'static str {
        if self.has("noatime") {
            "noatime"
        } else if self.has("relatime") {
            "relatime"
        } else {
            "strictatime"
        }
    }
}

/// The topmost mount at `point` in a mountinfo text.
fn shown(mountinfo: &str, point: &str) -> Shown {
    let line = mountinfo
        .lines()
        .rfind(|l| l.split_whitespace().nth(4) == Some(point))
        .unwrap_or_else(|| panic!("{point} is not mounted:\n{mountinfo}"));
    let (before, after) = line.split_once(" - ").unwrap();
    let set = |text: &str| text.split(',').map(str::to_string).collect::<BTreeSet<_>>();
    Shown {
        line: line.to_string(),
        per_mount: set(before.split_whitespace().nth(5).unwrap()),
        superblock: set(after.split_whitespace().nth(2).unwrap_or("")),
    }
}

#[test]
fn tmpcopyup_fills_the_tmpfs_with_the_image_content() {
    if !require_root("tmpcopyup_fills_the_tmpfs_with_the_image_content") {
        return;
    }
    let script = "stat -c '%n %a %u %g' /data /data/a /data/sub /data/sub/b /data/fifo; readlink /data/link; readlink /data/escape; \
                  cat /data/a /data/sub/b /data/nested/from-host; echo written > /data/w; cat /data/w; cat /real/r; grep -E ' /(data|real) ' /proc/self/mountinfo";
    let mut bundle = Bundle::busybox("copyup", &["sh", "-c", script]);
    // root in the container, to read what the other owners' modes keep from its user.
    bundle.spec["process"]["user"] = json!({"uid": 0, "gid": 0});
    // The image's /data: modes, owners, a symlink to a host path and one climbing out.
    let data = bundle.rootfs().join("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::create_dir_all(data.join("nested")).unwrap();
    std::fs::write(data.join("a"), "image-a\n").unwrap();
    std::fs::write(data.join("sub/b"), "image-b\n").unwrap();
    nix::unistd::mkfifo(&data.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o620)).unwrap();
    symlink("/etc/shadow", data.join("link")).unwrap();
    symlink("../../../../../../etc", data.join("escape")).unwrap();
    for (path, mode, owner) in
        [("", 0o777, 7), ("a", 0o644, 1234), ("sub", 0o711, 42), ("sub/b", 0o604, 43), ("fifo", 0o620, 44)]
    {
        let path = data.join(path);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        std::os::unix::fs::chown(&path, Some(owner), Some(owner + 1)).unwrap();
    }
    // A later bind mount below the tmpfs stays in place over the copied content.
    let host = TempDir::new("berth-copyup-src");
    std::fs::write(host.path().join("from-host"), "host-file\n").unwrap();
    // A destination that is a symlink in the image is mounted, and filled, where it leads.
    std::fs::create_dir_all(bundle.rootfs().join("real")).unwrap();
    std::fs::write(bundle.rootfs().join("real/r"), "image-r\n").unwrap();
    symlink("/real", bundle.rootfs().join("sym")).unwrap();
    add_mount(&mut bundle, "/data", "tmpfs", "tmpfs", &["rw", "nosuid", "nodev", "tmpcopyup"]);
    bundle.spec["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/sym", "type": "tmpfs", "source": "tmpfs", "options": ["tmpcopyup"]}));
    add_mount(&mut bundle, "/data/nested", "bind", host.path().to_str().unwrap(), &["bind"]);
    let out = run_ok(&bundle, "copyup");
    for expected in [
        "/data 777 7 8\n",
        "/data/a 644 1234 1235\n",
        "/data/sub 711 42 43\n",
        "/data/sub/b 604 43 44\n",
        "/data/fifo 620 44 45\n",
        "/etc/shadow\n../../../../../../etc\n",
        "image-a\nimage-b\nhost-file\nwritten\nimage-r\n",
    ] {
        assert!(out.contains(expected), "{expected:?} missing from the container's view:\n{out}");
    }
    for point in ["/data", "/real"] {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().nth(4) == Some(point))
            .unwrap_or_else(|| panic!("{point}:\n{out}"));
        assert!(line.contains(" - tmpfs "), "{point} is not a tmpfs: {line}");
    }
    // Writes went to the tmpfs, never to the image; the symlinks were copied, not followed.
    assert!(!data.join("w").exists(), "a write in the tmpfs reached the image");
    assert_eq!(std::fs::read_to_string(data.join("a")).unwrap(), "image-a\n");
    assert!(std::fs::symlink_metadata(data.join("link")).unwrap().file_type().is_symlink());
}

#[test]
fn recursive_options_reach_submounts_of_a_bind_mount() {
    if !require_root("recursive_options_reach_submounts_of_a_bind_mount") {
        return;
    }
    let source = TempDir::new("berth-recursive-src");
    let top = HostTmpfs::mount(&source.path().join("top"), MsFlags::empty());
    let sub = HostTmpfs::mount(&source.path().join("top/sub"), MsFlags::empty());
    // A second source whose submount has every flag the clearing forms remove.
    let locked = TempDir::new("berth-recursive-set");
    let locked_top = HostTmpfs::mount(&locked.path().join("top"), MsFlags::empty());
    let flags = MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC
        | MsFlags::MS_NOATIME
        | MsFlags::MS_NODIRATIME
        | MS_NOSYMFOLLOW;
    let locked_sub = HostTmpfs::mount(&locked.path().join("top/sub"), flags);
    let mut bundle = Bundle::busybox("recursive", &["cat", "/proc/self/mountinfo"]);
    let src = |dir: &TempDir| dir.path().join("top").to_string_lossy().into_owned();
    add_mount(
        &mut bundle,
        "/r",
        "bind",
        &src(&source),
        &["rbind", "rro", "rnosuid", "rnodev", "rnoexec", "rnoatime", "rnodiratime", "rnosymfollow"],
    );
    add_mount(&mut bundle, "/strict", "bind", &src(&source), &["rbind", "rstrictatime"]);
    add_mount(&mut bundle, "/norel", "bind", &src(&source), &["rbind", "rnorelatime"]);
    add_mount(&mut bundle, "/rel", "bind", &src(&locked), &["rbind", "rrelatime"]);
    add_mount(
        &mut bundle,
        "/cleared",
        "bind",
        &src(&locked),
        &["rbind", "rrw", "rsuid", "rdev", "rexec", "ratime", "rdiratime", "rsymfollow"],
    );
    add_mount(&mut bundle, "/nostrict", "bind", &src(&source), &["rbind", "rstrictatime", "rnostrictatime"]);
    let info = run_ok(&bundle, "recursive");
    drop((sub, top, locked_sub, locked_top));
    for point in ["/r", "/r/sub"] {
        let mount = shown(&info, point);
        for option in ["ro", "nosuid", "nodev", "noexec", "noatime", "nodiratime", "nosymfollow"] {
            assert!(mount.has(option), "{option} missing on {point}: {}", mount.line);
        }
    }
    for point in ["/strict", "/strict/sub", "/norel", "/norel/sub"] {
        assert_eq!(shown(&info, point).atime(), "strictatime", "{}", shown(&info, point).line);
    }
    for point in ["/rel/sub", "/nostrict/sub"] {
        assert_eq!(shown(&info, point).atime(), "relatime", "{}", shown(&info, point).line);
    }
    let cleared = shown(&info, "/cleared/sub");
    assert!(cleared.has("rw"), "{}", cleared.line);
    for option in ["nosuid", "nodev", "noexec", "noatime", "nodiratime", "nosymfollow"] {
        assert!(!cleared.has(option), "{option} still on /cleared/sub: {}", cleared.line);
    }
}

#[test]
fn nosymfollow_refuses_symlinks_and_symfollow_restores_them() {
    if !require_root("nosymfollow_refuses_symlinks_and_symfollow_restores_them") {
        return;
    }
    let script = "for d in /t /b /back; do ln -s /etc/passwd $d/l 2>/dev/null; if cat $d/l >/dev/null 2>&1; then echo $d follows; else echo $d refuses; fi; done; cat /proc/self/mountinfo";
    let mut bundle = Bundle::busybox("symfollow", &["sh", "-c", script]);
    let source = TempDir::new("berth-symfollow-src");
    symlink("/etc/passwd", source.path().join("l")).unwrap();
    let source = source.path().to_str().unwrap().to_string();
    add_mount(&mut bundle, "/t", "tmpfs", "tmpfs", &["nosymfollow"]);
    add_mount(&mut bundle, "/b", "bind", &source, &["bind", "nosymfollow"]);
    add_mount(&mut bundle, "/back", "tmpfs", "tmpfs", &["nosymfollow", "symfollow"]);
    let out = run_ok(&bundle, "symfollow");
    for expected in ["/t refuses", "/b refuses", "/back follows"] {
        assert!(out.contains(expected), "{expected:?}:\n{out}");
    }
    assert!(shown(&out, "/t").has("nosymfollow") && shown(&out, "/b").has("nosymfollow"));
    assert!(!shown(&out, "/back").has("nosymfollow"));
}

#[test]
fn per_mount_flags_are_set_and_cleared_on_bind_mounts() {
    if !require_root("per_mount_flags_are_set_and_cleared_on_bind_mounts") {
        return;
    }
    // A source with a program on it, then made read-only, nosuid, nodev and noexec.
    let dir = TempDir::new("berth-flags-src");
    let writable = HostTmpfs::mount(&dir.path().join("rw"), MsFlags::empty());
    std::fs::copy("/bin/busybox", writable.0.join("busybox")).unwrap();
    // A bind of it of its own, so no writer of the tmpfs (another test's child) holds it.
    let source = dir.path().join("src");
    std::fs::create_dir(&source).unwrap();
    mount(Some(&writable.0), &source, None::<&str>, MsFlags::MS_BIND, None::<&str>).unwrap();
    let source = HostTmpfs(source);
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(None::<&str>, &source.0, None::<&str>, MsFlags::MS_REMOUNT | MsFlags::MS_BIND | flags, None::<&str>).unwrap();
    let script = "for d in /kept /cleared /ne; do if $d/busybox true 2>/dev/null; then echo $d runs; else echo $d noexec; fi; done; \
                  cp /cleared/busybox /ne/; if /ne/busybox true 2>/dev/null; then echo /ne copy runs; else echo /ne copy refused; fi; \
                  if touch /cleared/w 2>/dev/null; then echo /cleared writable; fi; cat /proc/self/mountinfo";
    let mut bundle = Bundle::busybox("flags", &["sh", "-c", script]);
    let src = source.0.to_str().unwrap().to_string();
    add_mount(&mut bundle, "/kept", "bind", &src, &["bind"]);
    add_mount(&mut bundle, "/cleared", "bind", &src, &["bind", "rw", "suid", "dev", "exec", "defaults"]);
    add_mount(&mut bundle, "/ne", "tmpfs", "tmpfs", &["noexec", "mode=1777"]);
    let out = run_ok(&bundle, "flags");
    drop((source, writable));
    for expected in ["/kept noexec", "/cleared runs", "/ne noexec", "/ne copy refused", "/cleared writable"] {
        assert!(out.contains(expected), "{expected:?}:\n{out}");
    }
    let kept = shown(&out, "/kept");
    for option in ["ro", "nosuid", "nodev", "noexec"] {
        assert!(kept.has(option), "{option} on /kept: {}", kept.line);
    }
    let cleared = shown(&out, "/cleared");
    assert!(cleared.has("rw"), "{}", cleared.line);
    for option in ["nosuid", "nodev", "noexec"] {
        assert!(!cleared.has(option), "{option} still on /cleared: {}", cleared.line);
    }
}

#[test]
fn access_time_options_pick_the_mode() {
    if !require_root("access_time_options_pick_the_mode") {
        return;
    }
    let mut bundle = Bundle::busybox("atime", &["cat", "/proc/self/mountinfo"]);
    let cases: &[(&[&str], &str)] = &[
        (&["noatime"], "noatime"),
        (&["strictatime"], "strictatime"),
        (&["relatime"], "relatime"),
        (&["norelatime"], "strictatime"),
        (&["noatime", "atime"], "relatime"),
        (&["strictatime", "nostrictatime"], "relatime"),
        (&["nodiratime"], "relatime"),
        (&["nodiratime", "diratime"], "relatime"),
    ];
    for (n, (options, _)) in cases.iter().enumerate() {
        add_mount(&mut bundle, &format!("/a{n}"), "tmpfs", "tmpfs", options);
    }
    // The clearing forms on a bind mount of a source that has the mode.
    let dir = TempDir::new("berth-atime-src");
    let source = HostTmpfs::mount(&dir.path().join("src"), MsFlags::MS_NOATIME | MsFlags::MS_NODIRATIME);
    add_mount(&mut bundle, "/bound", "bind", source.0.to_str().unwrap(), &["bind", "atime", "diratime"]);
    let info = run_ok(&bundle, "atime");
    drop(source);
    for (n, (options, mode)) in cases.iter().enumerate() {
        let mount = shown(&info, &format!("/a{n}"));
        assert_eq!(mount.atime(), *mode, "{options:?}: {}", mount.line);
        assert_eq!(mount.has("nodiratime"), options.last() == Some(&"nodiratime"), "{options:?}: {}", mount.line);
    }
    let bound = shown(&info, "/bound");
    assert_eq!((bound.atime(), bound.has("nodiratime")), ("relatime", false), "{}", bound.line);
}

#[test]
fn filesystem_options_and_remount_change_the_filesystem() {
    if !require_root("filesystem_options_and_remount_change_the_filesystem") {
        return;
    }
    let mut bundle = Bundle::busybox(
        "superblock",
        &["sh", "-c", "if touch /rm/f 2>/dev/null; then echo /rm writable; fi; cat /proc/self/mountinfo"],
    );
    add_mount(&mut bundle, "/sync", "tmpfs", "tmpfs", &["sync"]);
    add_mount(&mut bundle, "/async", "tmpfs", "tmpfs", &["sync", "async"]);
    add_mount(&mut bundle, "/dirsync", "tmpfs", "tmpfs", &["dirsync", "lazytime"]);
    add_mount(&mut bundle, "/mand", "tmpfs", "tmpfs", &["mand"]);
    add_mount(&mut bundle, "/nomand", "tmpfs", "tmpfs", &["mand", "nomand", "nolazytime"]);
    // acl and noacl are accepted where the filesystem has, or lacks, POSIX ACLs; loud is
    // what a filesystem made through fsopen is.
    add_mount(&mut bundle, "/acl", "tmpfs", "tmpfs", &["acl"]);
    add_mount(&mut bundle, "/noacl", "mqueue", "mqueue", &["noacl", "loud"]);
    add_mount(&mut bundle, "/rm", "tmpfs", "tmpfs", &["size=1m", "nosuid"]);
    add_mount(&mut bundle, "/rm", "tmpfs", "tmpfs", &["remount", "ro", "size=2m", "noexec"]);
    let info = run_ok(&bundle, "superblock");
    assert!(shown(&info, "/sync").superblock.contains("sync"), "{}", shown(&info, "/sync").line);
    assert!(!shown(&info, "/async").superblock.contains("sync"), "{}", shown(&info, "/async").line);
    let dirsync = shown(&info, "/dirsync");
    assert!(dirsync.superblock.contains("dirsync") && dirsync.superblock.contains("lazytime"), "{}", dirsync.line);
    // The kernel keeps the flag (it has enforced no mandatory locks since Linux 5.15).
    assert!(shown(&info, "/mand").superblock.contains("mand"), "{}", shown(&info, "/mand").line);
    let nomand = shown(&info, "/nomand");
    assert!(!nomand.superblock.contains("mand") && !nomand.superblock.contains("lazytime"), "{}", nomand.line);
    // remount changed the tmpfs already there instead of mounting a second one.
    assert_eq!(info.lines().filter(|l| l.split_whitespace().nth(4) == Some("/rm")).count(), 1, "{info}");
    let remounted = shown(&info, "/rm");
    for option in ["ro", "nosuid", "noexec"] {
        assert!(remounted.has(option), "{option}: {}", remounted.line);
    }
    assert!(remounted.superblock.contains("size=2048k"), "{}", remounted.line);
    assert!(!info.contains("/rm writable"));
    assert!(
        shown(&info, "/acl").line.contains(" - tmpfs ") && shown(&info, "/noacl").line.contains(" - mqueue "),
        "{info}"
    );
}

#[test]
fn options_berth_cannot_apply_are_refused_by_name() {
    if !require_root("options_berth_cannot_apply_are_refused_by_name") {
        return;
    }
    let cases: &[(&str, &str, &[&str], &str)] = &[
        // tmpfs always has POSIX ACLs, mqueue never: berth checks what the kernel gives.
        ("tmpfs", "tmpfs", &["noacl"], "noacl"),
        ("mqueue", "mqueue", &["acl"], "acl"),
        // On remount berth changes only the flags named (fspick), which cannot carry it.
        ("tmpfs", "tmpfs", &["remount", "iversion"], "iversion"),
        ("cgroup", "cgroup", &["silent"], "silent"),
    ];
    for (n, (typ, src, options, option)) in cases.iter().enumerate() {
        let mut bundle = Bundle::busybox("refused", &["true"]);
        add_mount(&mut bundle, "/refused", typ, src, options);
        bundle.write_spec();
        let berth = Berth::new("refused");
        let id = format!("{}-{n}", container_id("refused"));
        let (code, _, stderr) = berth.run_bundle(bundle.path(), &id);
        assert_ne!(code, 0, "{options:?} was accepted");
        assert!(stderr.contains(&format!("{option:?}")) && stderr.contains("/refused"), "{options:?}: {stderr}");
        assert!(!berth.root().join(&id).exists(), "a refused container left state");
    }
    // A tmpfs stacked on another mount: berth copies only from the image, so it refuses.
    let mut bundle = Bundle::busybox("refused", &["true"]);
    add_mount(&mut bundle, "/stacked", "tmpfs", "tmpfs", &[]);
    add_mount(&mut bundle, "/stacked", "tmpfs", "tmpfs", &["tmpcopyup"]);
    bundle.write_spec();
    let berth = Berth::new("refused");
    let id = format!("{}-stacked", container_id("refused"));
    let (code, _, stderr) = berth.run_bundle(bundle.path(), &id);
    assert_ne!(code, 0, "a copy-up over another mount was accepted");
    assert!(stderr.contains("tmpcopyup") && stderr.contains("covers another mount"), "{stderr}");
    assert!(!berth.root().join(&id).exists(), "a refused container left state");
}

#[test]
fn filesystem_options_on_a_bind_mount_are_ignored_as_mount2_ignores_them() {
    if !require_root("filesystem_options_on_a_bind_mount_are_ignored_as_mount2_ignores_them") {
        return;
    }
    // runc hands these to mount(2) with MS_BIND, which ignores them; callers (and the
    // runtime-tools suite, with `mode=755`) send them, so the bind must still be made, with
    // the per-mount flags it asks for and its source's filesystem unchanged.
    let source = TempDir::new("berth-bind-fsopts");
    std::fs::write(source.path().join("marker"), "from the host\n").unwrap();
    let mut bundle = Bundle::busybox("bindfs", &["sh", "-c", "cat /b/marker; cat /proc/self/mountinfo"]);
    let options = ["bind", "mode=755", "size=1m", "sync", "dirsync", "acl", "tmpcopyup", "ro"];
    add_mount(&mut bundle, "/b", "bind", source.path().to_str().unwrap(), &options);
    let out = run_ok(&bundle, "bindfs");
    assert!(out.starts_with("from the host\n"), "the bind's content is missing: {out}");
    let shown = shown(&out, "/b");
    assert!(shown.has("ro"), "ro was not applied to the bind: {}", shown.line);
    assert!(
        !shown.superblock.contains("sync") && !shown.superblock.contains("dirsync"),
        "a bind changed its source's filesystem: {}",
        shown.line
    );
    assert!(std::fs::write(source.path().join("still-writable"), "x").is_ok(), "the source became read-only");
}

#[test]
fn a_mount_berth_makes_itself_never_hides_a_later_one() {
    if !require_root("a_mount_berth_makes_itself_never_hides_a_later_one") {
        return;
    }
    // berth makes a silent mount after all the others: one listed after it below it would be
    // hidden, which it refuses before create; through a symlink of the image it finds the
    // mount libcontainer made there busy, and refuses after create, leaving nothing.
    for (n, below) in ["/silent/below", "/link/below"].iter().enumerate() {
        let mut bundle = Bundle::busybox("hidden", &["true"]);
        add_mount(&mut bundle, "/silent", "tmpfs", "tmpfs", &["silent", "size=1m"]);
        symlink("/silent", bundle.rootfs().join("link")).unwrap();
        bundle.spec["mounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"destination": below, "type": "tmpfs", "source": "tmpfs"}));
        bundle.write_spec();
        let berth = Berth::new("hidden");
        let id = format!("{}-{n}", container_id("hidden"));
        let (code, _, stderr) = berth.run_bundle(bundle.path(), &id);
        assert_ne!(code, 0, "a mount below the silent one ({below}) was accepted");
        assert!(
            stderr.contains("\"silent\"") && stderr.contains("/silent") && stderr.contains("would hide"),
            "{below}: {stderr}"
        );
        assert!(!berth.root().join(&id).exists(), "a refused container left state");
    }
}

#[test]
fn silent_and_iversion_mounts_are_made_with_their_flags_and_data() {
    if !require_root("silent_and_iversion_mounts_are_made_with_their_flags_and_data") {
        return;
    }
    let script = "cat /iv/f; if touch /iv/w 2>/dev/null; then echo /iv writable; fi; ls /sysfs/class/net; cat /bound/f; cat /proc/self/mountinfo";
    let mut bundle = Bundle::busybox("silent", &["sh", "-c", script]);
    std::fs::create_dir_all(bundle.rootfs().join("iv")).unwrap();
    std::fs::write(bundle.rootfs().join("iv/f"), "image-f\n").unwrap();
    let host = TempDir::new("berth-silent-src");
    std::fs::write(host.path().join("f"), "host-f\n").unwrap();
    // berth makes these two itself (MS_SILENT, MS_I_VERSION), in one mount(2) call each.
    add_mount(
        &mut bundle,
        "/silent",
        "tmpfs",
        "tmpfs",
        &["silent", "size=2m", "mode=750", "nosuid", "sync", "noatime"],
    );
    add_mount(
        &mut bundle,
        "/iv",
        "tmpfs",
        "tmpfs",
        &["noiversion", "iversion", "ro", "size=1m", "tmpcopyup", "noexec"],
    );
    // Made read-only by the mount(2) call itself, filesystem and all, as runc makes it (an
    // fsopen mount without the flags would leave the filesystem writable).
    add_mount(&mut bundle, "/ramfs-silent", "ramfs", "ramfs", &["silent", "ro", "mode=711"]);
    add_mount(&mut bundle, "/ramfs-iv", "ramfs", "ramfs", &["iversion", "ro"]);
    // A sysfs belongs to the network namespace of whoever mounts it: the container's has only lo.
    add_mount(&mut bundle, "/sysfs", "sysfs", "sysfs", &["silent", "ro", "nosuid"]);
    // The flags left out (an fsopen mount has neither), and a bind mount, which ignores them.
    add_mount(&mut bundle, "/loud", "tmpfs", "tmpfs", &["silent", "loud", "size=3m"]);
    add_mount(&mut bundle, "/noiv", "tmpfs", "tmpfs", &["iversion", "noiversion", "size=4m"]);
    add_mount(
        &mut bundle,
        "/bound",
        "bind",
        host.path().to_str().unwrap(),
        &["bind", "silent", "iversion", "noiversion", "loud"],
    );
    let out = run_ok(&bundle, "silent");
    for point in ["/silent", "/iv", "/ramfs-silent", "/ramfs-iv", "/sysfs", "/loud", "/noiv", "/bound"] {
        // libcontainer's mount without the flags is gone: one mount at each place.
        assert_eq!(out.lines().filter(|l| l.split_whitespace().nth(4) == Some(point)).count(), 1, "{point}:\n{out}");
    }
    let silent = shown(&out, "/silent");
    assert!(silent.line.contains(" - tmpfs "), "{}", silent.line);
    for option in ["size=2048k", "mode=750", "sync"] {
        assert!(silent.superblock.contains(option), "{option}: {}", silent.line);
    }
    assert!(silent.has("nosuid") && silent.atime() == "noatime", "{}", silent.line);
    // Copied up while writable, then a read-only mount of a writable tmpfs, as runc leaves it.
    let iv = shown(&out, "/iv");
    assert!(out.contains("image-f\n") && !out.contains("/iv writable"), "{out}");
    assert!(
        iv.has("ro") && iv.has("noexec") && iv.superblock.contains("rw") && iv.superblock.contains("size=1024k"),
        "{}",
        iv.line
    );
    for point in ["/ramfs-silent", "/ramfs-iv"] {
        let ramfs = shown(&out, point);
        assert!(
            ramfs.line.contains(" - ramfs ") && ramfs.has("ro") && ramfs.superblock.contains("ro"),
            "{}",
            ramfs.line
        );
    }
    assert!(shown(&out, "/ramfs-silent").superblock.contains("mode=711"), "{out}");
    let sysfs = shown(&out, "/sysfs");
    assert!(sysfs.line.contains(" - sysfs ") && sysfs.has("ro") && sysfs.has("nosuid"), "{}", sysfs.line);
    let interfaces: Vec<&str> =
        out.lines().skip_while(|l| !l.starts_with("image-f")).skip(1).take_while(|l| *l != "host-f").collect();
    assert_eq!(interfaces, ["lo"], "the sysfs shows another network namespace:\n{out}");
    assert!(
        shown(&out, "/loud").superblock.contains("size=3072k")
            && shown(&out, "/noiv").superblock.contains("size=4096k"),
        "{out}"
    );
    assert!(out.contains("host-f\n"), "{out}");
}

#[test]
fn a_silent_mount_in_a_user_namespace_belongs_to_the_container_root() {
    if !require_root("a_silent_mount_in_a_user_namespace_belongs_to_the_container_root") {
        return;
    }
    // berth makes the mount in the container's user namespace, as its root (as runc does):
    // the new tmpfs's root is the container root's, so the container can write there.
    let script = "stat -c '%u %g %a' /silent; touch /silent/w && echo written; grep ' /silent ' /proc/self/mountinfo";
    let mut bundle = Bundle::busybox("silent-userns", &["sh", "-c", script]);
    add_mount(&mut bundle, "/silent", "tmpfs", "tmpfs", &["silent", "mode=750", "size=1m"]);
    // The rootfs must be usable by the mapped root.
    let status =
        std::process::Command::new("chown").args(["-R", "-h", "100000:100000"]).arg(bundle.rootfs()).status().unwrap();
    assert!(status.success());
    bundle.spec["linux"]["namespaces"].as_array_mut().unwrap().push(json!({"type": "user"}));
    bundle.spec["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    bundle.spec["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    let out = run_ok(&bundle, "silent-userns");
    assert!(out.starts_with("0 0 750\nwritten\n"), "{out}");
    let silent = shown(&out, "/silent");
    assert!(silent.superblock.contains("uid=100000") && silent.superblock.contains("size=1024k"), "{}", silent.line);
}

#[test]
fn features_lists_the_mount_options_of_runc() {
    if !have_program("runc") {
        missing("features_lists_the_mount_options_of_runc", "Debian's runc (make deps installs it)");
        return;
    }
    let list = |output: std::process::Output| -> BTreeSet<String> {
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let document: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        document["mountOptions"].as_array().unwrap().iter().map(|o| o.as_str().unwrap().to_string()).collect()
    };
    let runc = list(std::process::Command::new("runc").arg("features").output().unwrap());
    let berth = list(Berth::new("features").output(&["features"]));
    assert_eq!(runc.len(), 62, "runc 1.1 lists 62 mount options: {runc:?}");
    assert_eq!(
        berth,
        runc,
        "berth lacks {:?}, adds {:?}",
        runc.difference(&berth).collect::<Vec<_>>(),
        berth.difference(&runc).collect::<Vec<_>>()
    );
}

#[test]
fn options_berth_applies_leave_the_bundle_as_given() {
    if !require_root("options_berth_applies_leave_the_bundle_as_given") {
        return;
    }
    // libcontainer reads a copy of the spec without tmpcopyup; the container's state, the
    // bundle and berth's state root show no trace of it once create returns, and a
    // createRuntime hook still finds the bundle's own files (and its rootfs) where it looks.
    let mut bundle = Bundle::busybox("bundle", &["sh", "-c", "cat /data/f"]);
    std::fs::create_dir_all(bundle.rootfs().join("data")).unwrap();
    std::fs::write(bundle.rootfs().join("data/f"), "image-f\n").unwrap();
    std::fs::write(bundle.path().join("extra"), "bundle-file\n").unwrap();
    add_mount(&mut bundle, "/data", "tmpfs", "tmpfs", &["tmpcopyup"]);
    let seen = bundle.path().join("hook-saw");
    let hook = format!(
        "b=$(sed 's/.*\"bundle\":\"\\([^\"]*\\)\".*/\\1/'); cat \"$b/extra\" > {0}; ls \"$b/rootfs/data\" >> {0}",
        seen.display()
    );
    bundle.spec["hooks"] = json!({"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", hook]}]});
    let config = {
        bundle.write_spec();
        std::fs::read(bundle.path().join("config.json")).unwrap()
    };
    let berth = Berth::new("bundle");
    let id = container_id("bundle");
    let bundle_path = bundle.path().to_str().unwrap();
    berth.ok(&["create", "--bundle", bundle_path, &id]);
    assert_eq!(berth.state(&id)["bundle"], bundle_path);
    assert_eq!(std::fs::read_to_string(&seen).unwrap(), "bundle-file\nf\n");
    let entries: Vec<String> = std::fs::read_dir(berth.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries, std::slice::from_ref(&id), "berth's state root holds more than the container");
    assert_eq!(std::fs::read(bundle.path().join("config.json")).unwrap(), config, "the bundle's config.json changed");
    berth.ok(&["start", &id]);
    berth.wait_status(&id, "stopped");
    berth.ok(&["delete", &id]);
}
