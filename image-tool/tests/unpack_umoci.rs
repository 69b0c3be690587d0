//! Differential tests: the merged `rootfs/` of berth's overlay bundle equals umoci's flat
//! unpack of the same image (paths, types, modes incl. setuid, owners, sizes, contents,
//! symlink targets, hardlink groups, device numbers, xattrs), for images the test builds
//! with umoci; a zstd copy made by skopeo gives the same tree as its gzip original; a
//! two-platform index gives each platform's tree.

mod common;
use common::{assert_same_tree, have, ok, privileged, sh, umoci_image, Temp};
use std::fs;
use std::path::Path;

fn ready(test: &str) -> bool {
    privileged(test) && have("umoci", test) && have("skopeo", test)
}

fn unpack_and_compare(store: &Path, t: &Temp, tag: &str, umoci_tag: &str, extra: &[&str]) {
    let bundle = t.0.join(format!("bundle-{tag}-{}", extra.join("")).replace('/', "_"));
    let mut args = vec!["unpack", "--network", "none"];
    args.extend(extra);
    args.extend([tag, bundle.to_str().unwrap()]);
    ok(store, &args);
    let reference = t.0.join(format!("umoci-{umoci_tag}"));
    if !reference.exists() {
        sh(&format!("cd {}; umoci unpack --image L:{umoci_tag} umoci-{umoci_tag} >/dev/null", t.0.display()));
    }
    assert_same_tree(
        &bundle.join("rootfs"),
        &reference.join("rootfs"),
        &format!("{tag} {extra:?} against umoci's {umoci_tag}"),
    );
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
    common::tag_two_platform_index(&layout);
    let store = t.0.join("store");
    ok(&store, &["import", &format!("{}:multi", layout.display())]);
    unpack_and_compare(&store, &t, "multi", "arm", &["--platform", "linux/arm64"]);
    unpack_and_compare(&store, &t, "multi", "amd", &["--platform", "linux/amd64"]);
    let stderr = common::err(
        &store,
        &["unpack", "--network", "none", "--platform", "linux/s390x", "multi", t.0.join("none").to_str().unwrap()],
    );
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
