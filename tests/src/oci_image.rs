//! OCI image archives the tests build for `ctr images import`: layers are tars of
//! directories the test writes (busybox, plain files, OCI whiteouts), put together with
//! their config, manifest and index into an oci-archive.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::fixtures::{write_busybox_rootfs, TempDir};

/// One layer being written: a directory whose tree becomes the layer's tar.
pub struct LayerDir {
    dir: TempDir,
}

impl LayerDir {
    pub fn new() -> LayerDir {
        LayerDir { dir: TempDir::new("berth-layer") }
    }

    /// A layer holding a busybox root filesystem.
    pub fn busybox() -> LayerDir {
        let layer = LayerDir::new();
        write_busybox_rootfs(layer.dir.path());
        layer
    }

    /// Writes a file (its parents made as needed).
    pub fn file(self, path: &str, content: &str) -> LayerDir {
        let file = self.dir.path().join(path);
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(file, content).unwrap();
        self
    }

    /// Deletes `path` of a lower layer (an OCI whiteout, `.wh.NAME`).
    pub fn whiteout(self, path: &str) -> LayerDir {
        let path = Path::new(path);
        let name = format!(".wh.{}", path.file_name().unwrap().to_str().unwrap());
        self.file(path.with_file_name(name).to_str().unwrap(), "")
    }

    /// Hides what lower layers hold in directory `dir` (an opaque whiteout).
    pub fn opaque(self, dir: &str) -> LayerDir {
        self.file(&format!("{dir}/.wh..wh..opq"), "")
    }

    /// The layer as an uncompressed tar, owned by root.
    fn tar(&self) -> Vec<u8> {
        let out = Command::new("tar")
            .arg("-C")
            .arg(self.dir.path())
            .args(["--numeric-owner", "--owner=0", "--group=0", "-cf", "-", "."])
            .output()
            .expect("cannot run tar");
        assert!(
            out.status.success(),
            "tar of layer {} failed: {}",
            self.dir.path().display(),
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

impl Default for LayerDir {
    fn default() -> Self {
        LayerDir::new()
    }
}

fn digest(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// Stores `data` as a blob of `layout` and returns its descriptor.
fn put_blob(layout: &Path, media_type: &str, data: &[u8]) -> serde_json::Value {
    let digest = digest(data);
    fs::write(layout.join("blobs/sha256").join(&digest[7..]), data).unwrap();
    json!({"mediaType": media_type, "digest": digest, "size": data.len()})
}

/// An oci-archive in a temporary directory, of an image named `name` (a full reference,
/// `berth.test/NAME:TAG`) whose layers are `layers`, bottom first, and whose command is `cmd`.
pub struct OciArchive {
    dir: TempDir,
    pub name: String,
}

impl OciArchive {
    pub fn build(name: &str, layers: &[LayerDir], cmd: &[&str]) -> OciArchive {
        let config = json!({"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": cmd});
        OciArchive::build_with_config(name, layers, config)
    }

    /// As `build`, with `config` as the image config's `config` object (Entrypoint, Cmd,
    /// Env, User, WorkingDir, StopSignal, ...).
    pub fn build_with_config(name: &str, layers: &[LayerDir], config: serde_json::Value) -> OciArchive {
        let dir = TempDir::new("berth-oci");
        let layout = dir.path().join("layout");
        fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
        fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let tars: Vec<Vec<u8>> = layers.iter().map(LayerDir::tar).collect();
        let layer_descriptors: Vec<serde_json::Value> =
            tars.iter().map(|t| put_blob(&layout, "application/vnd.oci.image.layer.v1.tar", t)).collect();
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": tars.iter().map(|t| digest(t)).collect::<Vec<_>>()}
        });
        let config =
            put_blob(&layout, "application/vnd.oci.image.config.v1+json", &serde_json::to_vec(&config).unwrap());
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config,
            "layers": layer_descriptors
        });
        let mut manifest =
            put_blob(&layout, "application/vnd.oci.image.manifest.v1+json", &serde_json::to_vec(&manifest).unwrap());
        // containerd names an imported image after io.containerd.image.name.
        manifest["annotations"] =
            json!({"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "latest"});
        let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [manifest]});
        fs::write(layout.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
        let archive = dir.path().join("image.tar");
        let status = Command::new("tar")
            .arg("-C")
            .arg(&layout)
            .arg("-cf")
            .arg(&archive)
            .arg(".")
            .status()
            .expect("cannot run tar");
        assert!(status.success(), "cannot write the oci-archive {}", archive.display());
        OciArchive { dir, name: name.to_string() }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("image.tar")
    }
}
