//! The shim's rootfs mounts on this machine's kernel (as root): a read-only bind, an
//! overlay whose options exceed a page, and a failure that names the mount and leaves
//! nothing mounted.

use std::path::Path;

use berth_shim::rootfs::{mount_all, unmount};
use berth_tests::containerd::{mounts_below, unmount_below};
use berth_tests::fixtures::TempDir;
use berth_tests::privilege::require_root;
use containerd_shim::protos::types::mount::Mount;

/// A scratch directory whose mounts are undone on drop, also when the test fails.
struct Scratch(TempDir);

impl Drop for Scratch {
    fn drop(&mut self) {
        unmount_below(self.0.path());
    }
}

fn mount_of(kind: &str, source: &str, options: &[String]) -> Mount {
    Mount { type_: kind.to_string(), source: source.to_string(), options: options.to_vec(), ..Default::default() }
}

fn dir_with_file(dir: &Path, name: &str, content: &str) -> String {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), content).unwrap();
    dir.display().to_string()
}

#[test]
fn a_read_only_bind_is_made_and_undone() {
    if !require_root("a_read_only_bind_is_made_and_undone") {
        return;
    }
    let scratch = Scratch(TempDir::new("berth-rootfs-bind"));
    let source = dir_with_file(&scratch.0.path().join("source"), "file", "bound");
    let target = scratch.0.path().join("rootfs");
    std::fs::create_dir(&target).unwrap();
    mount_all(&[mount_of("bind", &source, &["rbind".into(), "ro".into()])], &target).unwrap();
    assert_eq!(std::fs::read_to_string(target.join("file")).unwrap(), "bound");
    let write = std::fs::write(target.join("new"), "x").unwrap_err();
    assert_eq!(write.raw_os_error(), Some(libc::EROFS), "{write}");
    unmount(&target).unwrap();
    assert_eq!(mounts_below(&target), vec![]);
}

#[test]
fn an_overlay_of_more_layers_than_a_page_of_options_holds_is_mounted() {
    if !require_root("an_overlay_of_more_layers_than_a_page_of_options_holds_is_mounted") {
        return;
    }
    let scratch = Scratch(TempDir::new("berth-rootfs-overlay"));
    let base = scratch.0.path();
    // Long layer names, as containerd's snapshot paths are: 70 of them take over 6 KiB.
    let lowers: Vec<String> = (0..70)
        .map(|n| {
            dir_with_file(
                &base.join(format!("layer-with-a-long-name-like-a-snapshot-path-{n:03}/fs")),
                &format!("from-{n}"),
                &n.to_string(),
            )
        })
        .collect();
    // The topmost layer comes first and wins.
    std::fs::write(base.join("layer-with-a-long-name-like-a-snapshot-path-000/fs/from-69"), "top").unwrap();
    let upper = dir_with_file(&base.join("upper"), "in-upper", "upper");
    std::fs::create_dir(base.join("work")).unwrap();
    let options = vec![
        "index=off".to_string(),
        format!("workdir={}/work", base.display()),
        format!("upperdir={upper}"),
        format!("lowerdir={}", lowers.join(":")),
    ];
    assert!(options.join(",").len() > 4096);
    let target = base.join("rootfs");
    std::fs::create_dir(&target).unwrap();
    mount_all(&[mount_of("overlay", "overlay", &options)], &target).unwrap();
    assert_eq!(mounts_below(&target), vec![(target.clone(), "overlay".to_string())]);
    assert_eq!(std::fs::read_to_string(target.join("from-68")).unwrap(), "68");
    assert_eq!(std::fs::read_to_string(target.join("from-69")).unwrap(), "top");
    assert_eq!(std::fs::read_to_string(target.join("in-upper")).unwrap(), "upper");
    std::fs::write(target.join("written"), "w").unwrap();
    assert_eq!(std::fs::read_to_string(base.join("upper/written")).unwrap(), "w");
    unmount(&target).unwrap();
    assert_eq!(mounts_below(&target), vec![]);
}

#[test]
fn a_failed_mount_names_itself_and_leaves_nothing_mounted() {
    if !require_root("a_failed_mount_names_itself_and_leaves_nothing_mounted") {
        return;
    }
    let scratch = Scratch(TempDir::new("berth-rootfs-fail"));
    let source = dir_with_file(&scratch.0.path().join("source"), "file", "bound");
    let target = scratch.0.path().join("rootfs");
    std::fs::create_dir(&target).unwrap();
    let missing = scratch.0.path().join("no-such-layer").display().to_string();
    // Both ways of mounting an overlay: mount(2), and fsconfig for a long lowerdir.
    for lowerdir in [missing.clone(), vec![missing.clone(); 100].join(":")] {
        let mounts = [
            mount_of("bind", &source, &["rbind".into()]),
            mount_of("overlay", "overlay", &[format!("lowerdir={lowerdir}")]),
        ];
        let error = mount_all(&mounts, &target).unwrap_err();
        assert!(
            error.contains("overlay mount 2 of 2")
                && error.contains(&target.display().to_string())
                && error.contains("No such file"),
            "{error}"
        );
        assert_eq!(mounts_below(&target), vec![], "{error}");
    }
}
