//! `import` (layouts and oci-archives), `list`, `inspect`, `rm` and `gc` on images written by the test.
use std::fs;
use std::path::Path;
use std::process::Command;

mod common;
use common::{desc, digest, err, ok, put, Temp};

/// Writes a layout with one image per tag (each its own Cmd, all sharing one layer);
/// returns the manifest digests.
fn write_layout(layout: &Path, tags: &[&str]) -> Vec<String> {
    tags.iter()
        .map(|tag| {
            common::write_image(layout, tag, &[vec![0u8; 1024]], serde_json::json!({ "Cmd": ["/bin/echo", tag] }))
        })
        .collect()
}

fn blob_count(store: &Path) -> usize {
    fs::read_dir(store.join("blobs/sha256")).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn imports_every_tag_lists_and_inspects() {
    let t = Temp::new();
    let (layout, store) = (t.0.join("layout"), t.0.join("store"));
    let digests = write_layout(&layout, &["one", "two"]);
    let imported = ok(&store, &["import", layout.to_str().unwrap()]);
    assert_eq!(imported, "one\ntwo\n");
    let list = ok(&store, &["list"]);
    assert_eq!(list, format!("one\t{}\ntwo\t{}\n", digests[0], digests[1]));
    let doc: serde_json::Value = serde_json::from_str(&ok(&store, &["inspect", "two"])).unwrap();
    assert_eq!(doc["digest"], digests[1].as_str());
    assert_eq!(doc["config"]["config"]["Cmd"], serde_json::json!(["/bin/echo", "two"]));
    assert_eq!(doc["manifest"]["schemaVersion"], 2);
    // shared layer stored once: layer + 2 configs + 2 manifests
    assert_eq!(blob_count(&store), 5);
    assert!(fs::read_dir(store.join("tmp")).unwrap().next().is_none());
}

#[test]
fn path_tag_selects_one_and_missing_tag_is_refused() {
    let t = Temp::new();
    let (layout, store) = (t.0.join("layout"), t.0.join("store"));
    write_layout(&layout, &["one", "two"]);
    assert_eq!(ok(&store, &["import", &format!("{}:two", layout.display())]), "two\n");
    assert_eq!(ok(&store, &["list"]).lines().count(), 1);
    let e = err(&store, &["import", &format!("{}:three", layout.display())]);
    assert!(e.contains("no manifest tagged \"three\""), "{e}");
}

#[test]
fn corrupted_blob_is_refused_naming_digest_and_leaves_nothing() {
    let t = Temp::new();
    let (layout, store) = (t.0.join("layout"), t.0.join("store"));
    write_layout(&layout, &["one"]);
    let layer_d = digest(&[0u8; 1024]);
    fs::write(layout.join("blobs/sha256").join(&layer_d[7..]), [1u8; 1024]).unwrap();
    let e = err(&store, &["import", layout.to_str().unwrap()]);
    assert!(e.contains(&layer_d) && e.contains("corrupt"), "{e}");
    assert_eq!(ok(&store, &["list"]), "");
    assert!(!store.join("blobs/sha256").join(&layer_d[7..]).exists());
    assert!(fs::read_dir(store.join("tmp")).unwrap().next().is_none());
}

#[test]
fn symlinked_blob_in_layout_is_refused() {
    let t = Temp::new();
    let (layout, store) = (t.0.join("layout"), t.0.join("store"));
    write_layout(&layout, &["one"]);
    let layer_d = digest(&[0u8; 1024]);
    let blob = layout.join("blobs/sha256").join(&layer_d[7..]);
    fs::rename(&blob, t.0.join("outside")).unwrap();
    std::os::unix::fs::symlink(t.0.join("outside"), &blob).unwrap();
    let e = err(&store, &["import", layout.to_str().unwrap()]);
    assert!(e.contains("not a regular file"), "{e}");
    assert_eq!(ok(&store, &["list"]), "");
}

#[test]
fn schema1_and_artifacts_are_refused() {
    let t = Temp::new();
    let (layout, store) = (t.0.join("layout"), t.0.join("store"));
    write_layout(&layout, &["one"]);
    let rewrite = |manifest: serde_json::Value| {
        let data = serde_json::to_vec(&manifest).unwrap();
        let d = put(&layout, &data);
        let mut entry = desc("application/vnd.oci.image.manifest.v1+json", &data, &d);
        entry["annotations"] = serde_json::json!({ "org.opencontainers.image.ref.name": "bad" });
        let index = serde_json::json!({ "schemaVersion": 2, "manifests": [entry] });
        fs::write(layout.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    };
    rewrite(serde_json::json!({ "schemaVersion": 1, "name": "x", "tag": "y", "fsLayers": [] }));
    let e = err(&store, &["import", layout.to_str().unwrap()]);
    assert!(e.contains("schema1"), "{e}");
    let config = b"{}";
    let config_d = put(&layout, config);
    rewrite(serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": desc("application/vnd.example.sbom+json", config, &config_d),
        "layers": []
    }));
    let e = err(&store, &["import", layout.to_str().unwrap()]);
    assert!(e.contains("not a container image"), "{e}");
    assert_eq!(ok(&store, &["list"]), "");
}

fn tar(dir: &Path, archive: &Path) {
    let status = Command::new("tar").arg("-C").arg(dir).arg("-cf").arg(archive).arg(".").status().unwrap();
    assert!(status.success(), "tar failed");
}

#[test]
fn imports_oci_archive_whole_and_by_tag() {
    let t = Temp::new();
    let (layout, store) = (t.0.join("layout"), t.0.join("store"));
    let digests = write_layout(&layout, &["one", "two"]);
    let archive = t.0.join("image.tar");
    tar(&layout, &archive);
    assert_eq!(ok(&store, &["import", &format!("{}:two", archive.display())]), "two\n");
    assert_eq!(ok(&store, &["list"]), format!("two\t{}\n", digests[1]));
    assert_eq!(ok(&store, &["import", archive.to_str().unwrap()]), "one\ntwo\n");
    assert_eq!(blob_count(&store), 5);
    assert!(fs::read_dir(store.join("tmp")).unwrap().next().is_none());
}

#[test]
fn corrupted_oci_archive_leaves_nothing() {
    let t = Temp::new();
    let (layout, store) = (t.0.join("layout"), t.0.join("store"));
    write_layout(&layout, &["one"]);
    let layer_d = digest(&[0u8; 1024]);
    fs::write(layout.join("blobs/sha256").join(&layer_d[7..]), [1u8; 1024]).unwrap();
    let archive = t.0.join("image.tar");
    tar(&layout, &archive);
    let e = err(&store, &["import", archive.to_str().unwrap()]);
    assert!(e.contains(&layer_d) && e.contains("corrupt"), "{e}");
    assert_eq!(ok(&store, &["list"]), "");
    assert!(fs::read_dir(store.join("tmp")).unwrap().next().is_none());
}

#[test]
fn symlinked_blob_in_oci_archive_is_refused() {
    let t = Temp::new();
    let (layout, store) = (t.0.join("layout"), t.0.join("store"));
    write_layout(&layout, &["one"]);
    let layer_d = digest(&[0u8; 1024]);
    let blob = layout.join("blobs/sha256").join(&layer_d[7..]);
    fs::remove_file(&blob).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", &blob).unwrap();
    let archive = t.0.join("image.tar");
    tar(&layout, &archive);
    let e = err(&store, &["import", archive.to_str().unwrap()]);
    assert!(e.contains("not a regular file"), "{e}");
    assert_eq!(ok(&store, &["list"]), "");
}

#[test]
fn legacy_docker_archive_is_imported() {
    let t = Temp::new();
    let store = t.0.join("store");
    // `docker save`'s legacy form: manifest.json, a config, layer tars (the second image's
    // layer a symlink to the first's, as docker writes shared layers).
    let layer = common::Tar::default().add(common::Entry::file("hello", b"hi")).finish();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": { "Cmd": ["/hello"] },
        "rootfs": { "type": "layers", "diff_ids": [digest(&layer)] }
    }))
    .unwrap();
    let manifest = serde_json::json!([
        { "Config": "cfg.json", "RepoTags": ["example.org/hello:1"], "Layers": ["aaa/layer.tar"] },
        { "Config": "cfg.json", "RepoTags": ["example.org/hello:2"], "Layers": ["bbb/layer.tar"] }
    ]);
    let mut archive = common::Tar::default();
    archive.add(common::Entry::file("manifest.json", &serde_json::to_vec(&manifest).unwrap()));
    archive.add(common::Entry::file("cfg.json", &config));
    archive.add(common::Entry::dir("aaa")).add(common::Entry::file("aaa/layer.tar", &layer));
    archive.add(common::Entry::dir("bbb")).add(common::Entry::symlink("bbb/layer.tar", "../aaa/layer.tar"));
    let file = t.0.join("docker.tar");
    fs::write(&file, archive.finish()).unwrap();
    assert_eq!(ok(&store, &["import", file.to_str().unwrap()]), "example.org/hello:1\nexample.org/hello:2\n");
    let inspected: serde_json::Value = serde_json::from_str(&ok(&store, &["inspect", "example.org/hello:2"])).unwrap();
    assert_eq!(inspected["manifest"]["layers"][0]["digest"], digest(&layer));
    assert_eq!(inspected["config"]["config"]["Cmd"][0], "/hello");
    // A manifest.json naming a file the archive lacks is refused, leaving nothing.
    let broken = serde_json::json!([{ "Config": "cfg.json", "RepoTags": ["x:1"], "Layers": ["missing.tar"] }]);
    let mut archive = common::Tar::default();
    archive
        .add(common::Entry::file("manifest.json", &serde_json::to_vec(&broken).unwrap()))
        .add(common::Entry::file("cfg.json", &config));
    let file = t.0.join("broken.tar");
    fs::write(&file, archive.finish()).unwrap();
    let store2 = t.0.join("store2");
    let e = err(&store2, &["import", file.to_str().unwrap()]);
    assert!(e.contains("missing.tar"), "{e}");
    assert_eq!(ok(&store2, &["list"]), "");
    assert_eq!(fs::read_dir(store2.join("tmp")).unwrap().count(), 0);
}

#[test]
fn oci_in_tar_docker_archive_is_imported_as_a_layout() {
    let t = Temp::new();
    let (layout, store) = (t.0.join("layout"), t.0.join("store"));
    let digests = write_layout(&layout, &["one"]);
    // `docker save` (25+) writes its own manifest.json beside the OCI layout.
    fs::write(layout.join("manifest.json"), "[]").unwrap();
    let archive = t.0.join("image.tar");
    tar(&layout, &archive);
    assert_eq!(ok(&store, &["import", archive.to_str().unwrap()]), "one\n");
    assert_eq!(ok(&store, &["list"]), format!("one\t{}\n", digests[0]));
}

#[test]
fn rm_removes_the_name_and_refuses_unknown_names() {
    let t = Temp::new();
    let (layout, store) = (t.0.join("layout"), t.0.join("store"));
    write_layout(&layout, &["one", "two"]);
    ok(&store, &["import", layout.to_str().unwrap()]);
    ok(&store, &["rm", "one"]);
    assert!(ok(&store, &["list"]).starts_with("two\t"));
    let e = err(&store, &["rm", "one"]);
    assert!(e.contains("no image named \"one\""), "{e}");
    let e = err(&store, &["inspect", "one"]);
    assert!(e.contains("no image named \"one\""), "{e}");
}

#[test]
fn gc_frees_only_blobs_no_image_uses() {
    let t = Temp::new();
    let (layout, store) = (t.0.join("layout"), t.0.join("store"));
    write_layout(&layout, &["one", "two"]);
    ok(&store, &["import", layout.to_str().unwrap()]);
    assert_eq!(ok(&store, &["gc"]), "");
    ok(&store, &["rm", "one"]);
    // "one"'s manifest and config go; the layer "two" shares stays.
    assert_eq!(ok(&store, &["gc"]).lines().count(), 2);
    assert_eq!(blob_count(&store), 3);
    ok(&store, &["inspect", "two"]);
    ok(&store, &["rm", "two"]);
    ok(&store, &["gc"]);
    assert_eq!(blob_count(&store), 0);
}

#[test]
fn concurrent_imports_and_gc_on_one_store_are_safe() {
    let t = Temp::new();
    let store = t.0.join("store");
    let mut layouts = Vec::new();
    for i in 0..4 {
        let layout = t.0.join(format!("layout{i}"));
        let tag = format!("t{i}");
        write_layout(&layout, &[tag.as_str()]);
        layouts.push(layout);
    }
    let children: Vec<_> = layouts
        .iter()
        .map(|layout| {
            Command::new(env!("CARGO_BIN_EXE_berth-image"))
                .arg("--store")
                .arg(&store)
                .arg("import")
                .arg(layout)
                .spawn()
                .unwrap()
        })
        .chain(std::iter::once(
            Command::new(env!("CARGO_BIN_EXE_berth-image")).arg("--store").arg(&store).arg("gc").spawn().unwrap(),
        ))
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    assert_eq!(ok(&store, &["list"]).lines().count(), 4);
    for i in 0..4 {
        ok(&store, &["inspect", &format!("t{i}")]);
    }
    assert_eq!(ok(&store, &["gc"]), "");
    // shared layer + 4 configs + 4 manifests
    assert_eq!(blob_count(&store), 9);
}
