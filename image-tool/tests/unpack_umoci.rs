//! Differential tests: the merged `rootfs/` of berth's overlay bundle equals umoci's flat
//! unpack of the same image (paths, types, modes incl. setuid, owners, sizes, contents,
//! symlink targets, hardlink groups, device numbers, xattrs), for images the test builds
//! with umoci; a zstd copy made by skopeo gives the same tree as its gzip original; a
//! two-platform index gives each platform's tree.

mod common;
use common::{have, ok, privileged, Temp};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::CString;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

fn sh(script: &str) {
    let out = Command::new("sh").arg("-ec").arg(script).output().unwrap();
    assert!(out.status.success(), "{script}\n{}", String::from_utf8_lossy(&out.stderr));
}

fn ready(test: &str) -> bool {
    privileged(test) && have("umoci", test) && have("skopeo", test)
}

fn xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut names = vec![0u8; 65536];
    // SAFETY: buffers sized as passed.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    let mut out = BTreeMap::new();
    for name in names[..n.max(0) as usize].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let key = String::from_utf8_lossy(name).into_owned();
        if key.starts_with("security.") || key.starts_with("trusted.overlay.") {
            continue; // the host's labels; overlay's own bookkeeping
        }
        let cname = CString::new(name).unwrap();
        let mut value = vec![0u8; 65536];
        // SAFETY: as above.
        let len = unsafe { libc::lgetxattr(c.as_ptr(), cname.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
        value.truncate(len.max(0) as usize);
        out.insert(key, value);
    }
    out
}

/// Everything about a tree that the differential compares: one line per path, and the
/// hardlink groups.
fn describe(root: &Path) -> (BTreeMap<String, String>, BTreeSet<Vec<String>>) {
    let mut entries = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), Vec<String>> = HashMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let meta = fs::symlink_metadata(&path).unwrap();
            let ft = meta.file_type();
            let detail = if ft.is_dir() {
                stack.push(path.clone());
                "dir".to_string()
            } else if ft.is_symlink() {
                format!("symlink -> {}", fs::read_link(&path).unwrap().display())
            } else if ft.is_file() {
                inodes.entry((meta.dev(), meta.ino())).or_default().push(rel.clone());
                format!("file {} bytes {:x}", meta.len(), fs::read(&path).unwrap().iter().fold(0u64, |h, b| h.wrapping_mul(1099511628211) ^ *b as u64))
            } else if ft.is_char_device() || ft.is_block_device() {
                format!("{} {}:{}", if ft.is_char_device() { "char" } else { "block" }, libc::major(meta.rdev()), libc::minor(meta.rdev()))
            } else {
                "fifo".to_string()
            };
            let mode = if ft.is_symlink() { 0 } else { meta.mode() & 0o7777 };
            entries.insert(rel, format!("{detail} mode {mode:o} owner {}:{} xattrs {:?}", meta.uid(), meta.gid(), xattrs(&path)));
        }
    }
    let groups = inodes.into_values().filter(|g| g.len() > 1).map(|mut g| {
        g.sort();
        g
    });
    (entries, groups.collect())
}

fn assert_same_tree(berth: &Path, reference: &Path, what: &str) {
    let (ours, our_links) = describe(berth);
    let (theirs, their_links) = describe(reference);
    // The image holds every kind the comparison is about.
    for (path, kind) in [("a/suid", "file"), ("a/null", "char 1:3"), ("a/loop", "block 7:0"), ("a/fifo", "fifo"), ("a/rel", "symlink -> h1"), ("a/flavour", "user.berth")] {
        assert!(theirs.get(path).is_some_and(|l| l.contains(kind)), "{what}: umoci's tree lacks {path} ({kind}): {theirs:?}");
    }
    for gone in ["a/deleted", "gone", "opaque/old"] {
        assert!(!theirs.contains_key(gone), "{what}: umoci's tree still has {gone}");
    }
    assert!(!their_links.is_empty(), "{what}: umoci's tree has no hardlinks");
    for (path, line) in &theirs {
        assert_eq!(ours.get(path), Some(line), "{what}: {path} differs");
    }
    let extra: Vec<&String> = ours.keys().filter(|p| !theirs.contains_key(*p)).collect();
    assert!(extra.is_empty(), "{what}: berth has extra paths {extra:?}");
    assert_eq!(our_links, their_links, "{what}: hardlink groups differ");
}

/// Builds layout `L` with image `tag`: two layers of odd content made with umoci.
fn umoci_image(dir: &Path, tag: &str, flavour: &str) {
    let d = dir.display();
    sh(&format!(
        "cd {d}; [ -d L ] || umoci init --layout L; umoci new --image L:{tag}; umoci unpack --image L:{tag} B-{tag} >/dev/null; R=B-{tag}/rootfs
         mkdir -p $R/a/b $R/gone/deep $R/opaque; echo {flavour} > $R/a/flavour; echo one > $R/a/h1; ln $R/a/h1 $R/a/h2
         echo bye > $R/a/deleted; echo deep > $R/gone/deep/f; echo old > $R/opaque/old
         echo setuid > $R/a/suid; chmod 4755 $R/a/suid; mkdir $R/a/sgid; chmod 2775 $R/a/sgid; chmod 1777 $R/a/b
         echo odd > $R/a/odd; chown 12345:54321 $R/a/odd; chown 7:8 $R/a/b
         ln -s h1 $R/a/rel; ln -s /etc/passwd $R/a/abs; ln -s ../nowhere $R/a/dangling
         mknod $R/a/null c 1 3; mknod $R/a/loop b 7 0; mkfifo $R/a/fifo
         head -c 300000 /dev/urandom > $R/a/random
         umoci repack --image L:{tag} B-{tag}
         rm $R/a/deleted; rm -r $R/gone; rm -r $R/opaque; mkdir $R/opaque; echo new > $R/opaque/new
         echo changed > $R/a/h1; chown 1:1 $R/a/odd; chmod 600 $R/a/suid; echo two > $R/a/second-layer
         umoci repack --image L:{tag} B-{tag}
         umoci config --image L:{tag} --config.cmd /bin/sh
         rm -rf B-{tag}"
    ));
    // An xattr set through umoci's own layer format needs a layer with one.
    sh(&format!(
        "cd {d}; umoci unpack --image L:{tag} X-{tag} >/dev/null; R=X-{tag}/rootfs
         python3 -c \"import os; os.setxattr('$R/a/flavour', 'user.berth', b'{flavour}', follow_symlinks=False)\"
         umoci repack --image L:{tag} X-{tag}; rm -rf X-{tag}"
    ));
}

fn unpack_and_compare(store: &Path, t: &Temp, tag: &str, umoci_tag: &str, extra: &[&str]) {
    let bundle = t.0.join(format!("bundle-{tag}-{}", extra.join("")).replace('/', "_"));
    let mut args = vec!["unpack"];
    args.extend(extra);
    args.extend([tag, bundle.to_str().unwrap()]);
    ok(store, &args);
    let reference = t.0.join(format!("umoci-{umoci_tag}"));
    if !reference.exists() {
        sh(&format!("cd {}; umoci unpack --image L:{umoci_tag} umoci-{umoci_tag} >/dev/null", t.0.display()));
    }
    assert_same_tree(&bundle.join("rootfs"), &reference.join("rootfs"), &format!("{tag} {extra:?} against umoci's {umoci_tag}"));
    ok(store, &["release", bundle.to_str().unwrap()]);
}

#[test]
fn berths_rootfs_equals_umocis_unpack() {
    if !ready("berths_rootfs_equals_umocis_unpack") {
        return;
    }
    let t = Temp::new();
    umoci_image(&t.0, "odd", "amd");
    let store = t.0.join("store");
    ok(&store, &["import", t.0.join("L").to_str().unwrap()]);
    unpack_and_compare(&store, &t, "odd", "odd", &[]);
}

#[test]
fn a_zstd_copy_unpacks_to_the_same_tree() {
    if !ready("a_zstd_copy_unpacks_to_the_same_tree") {
        return;
    }
    let t = Temp::new();
    umoci_image(&t.0, "odd", "amd");
    let d = t.0.display();
    sh(&format!("cd {d}; skopeo copy -q --dest-compress-format zstd oci:L:odd oci:Z:odd"));
    let layers = fs::read_to_string(t.0.join("Z/index.json")).unwrap();
    assert!(!layers.is_empty());
    let store = t.0.join("store");
    ok(&store, &["import", t.0.join("Z").to_str().unwrap()]);
    let manifest = ok(&store, &["inspect", "odd"]);
    assert!(manifest.contains("tar+zstd"), "skopeo did not write zstd layers: {manifest}");
    // umoci cannot read zstd: compare with umoci's unpack of the gzip original.
    unpack_and_compare(&store, &t, "odd", "odd", &[]);
}

#[test]
fn each_platform_of_an_index_unpacks_to_its_own_tree() {
    if !ready("each_platform_of_an_index_unpacks_to_its_own_tree") {
        return;
    }
    let t = Temp::new();
    umoci_image(&t.0, "amd", "amd");
    umoci_image(&t.0, "arm", "arm");
    // An index of both, tagged `multi`; umoci unpacks each platform's own tag.
    let layout = t.0.join("L");
    let mut index: serde_json::Value = serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let mut children = Vec::new();
    for (tag, arch) in [("amd", "amd64"), ("arm", "arm64")] {
        let mut entry = index["manifests"].as_array().unwrap().iter().find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag).unwrap().clone();
        entry.as_object_mut().unwrap().remove("annotations");
        entry["platform"] = serde_json::json!({ "os": "linux", "architecture": arch });
        children.push(entry);
    }
    let multi = serde_json::to_vec(&serde_json::json!({ "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": children })).unwrap();
    let multi_digest = common::put(&layout, &multi);
    let mut entry = common::desc("application/vnd.oci.image.index.v1+json", &multi, &multi_digest);
    entry["annotations"] = serde_json::json!({ "org.opencontainers.image.ref.name": "multi" });
    index["manifests"].as_array_mut().unwrap().push(entry);
    fs::write(layout.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    let store = t.0.join("store");
    ok(&store, &["import", &format!("{}:multi", layout.display())]);
    unpack_and_compare(&store, &t, "multi", "arm", &["--platform", "linux/arm64"]);
    unpack_and_compare(&store, &t, "multi", "amd", &["--platform", "linux/amd64"]);
    let stderr = common::err(&store, &["unpack", "--platform", "linux/s390x", "multi", t.0.join("none").to_str().unwrap()]);
    assert!(stderr.contains("no manifest for linux/s390x") && stderr.contains("linux/arm64"), "{stderr}");
}

#[test]
fn a_docker_archive_unpacks_like_umoci_on_skopeos_oci_copy() {
    if !ready("a_docker_archive_unpacks_like_umoci_on_skopeos_oci_copy") {
        return;
    }
    let t = Temp::new();
    umoci_image(&t.0, "odd", "amd");
    // skopeo writes the legacy docker-archive; umoci reads skopeo's OCI copy of it.
    let d = t.0.display();
    sh(&format!("cd {d}; skopeo copy -q oci:L:odd docker-archive:docker.tar:example.org/odd:1; rm -rf L; skopeo copy -q docker-archive:docker.tar oci:L:odd"));
    let store = t.0.join("store");
    assert_eq!(ok(&store, &["import", t.0.join("docker.tar").to_str().unwrap()]), "example.org/odd:1\n");
    unpack_and_compare(&store, &t, "example.org/odd:1", "odd", &[]);
}
