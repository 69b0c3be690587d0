//! Import from an OCI image-layout directory: every named manifest, or the one tagged TAG;
//! each blob is verified by the store as it is copied in.
use crate::digest::Digest;
use crate::manifest::{self, Parsed};
use crate::store::{ImageRef, Locked};
use anyhow::{bail, Context, Result};
use oci_spec::image::Descriptor;
use std::fs::{self, File};
use std::path::Path;

/// Imports the images of the layout directory `dir` (every named manifest, or `tag`).
pub fn import_dir(locked: &Locked<'_>, dir: &Path, tag: Option<&str>) -> Result<Vec<String>> {
    let marker = dir.join("oci-layout");
    let marker_text = fs::read_to_string(&marker)
        .with_context(|| format!("{} is not an OCI image layout: {} is missing", dir.display(), marker.display()))?;
    let marker_json: serde_json::Value =
        serde_json::from_str(&marker_text).with_context(|| format!("{} is not valid JSON", marker.display()))?;
    if marker_json["imageLayoutVersion"] != "1.0.0" {
        bail!("{} has an unsupported imageLayoutVersion (expected 1.0.0)", marker.display());
    }
    let index_path = dir.join("index.json");
    let index_data = fs::read(&index_path).with_context(|| format!("cannot read {}", index_path.display()))?;
    let index_digest = Digest::of_bytes(&index_data);
    let Parsed::Index(index) = manifest::parse(manifest::OCI_INDEX, &index_data, &index_digest)
        .with_context(|| format!("in {}", index_path.display()))?
    else {
        bail!("{} is an image manifest, not an index", index_path.display());
    };

    let selected: Vec<(String, Descriptor)> = index
        .manifests()
        .iter()
        .cloned()
        .filter_map(|d| {
            let name = d
                .annotations()
                .as_ref()
                .and_then(|a| a.get(manifest::REF_NAME))
                .cloned()
                .unwrap_or_else(|| d.digest().to_string());
            match tag {
                Some(t) if t != name => None,
                _ => Some((name, d)),
            }
        })
        .collect();
    if selected.is_empty() {
        match tag {
            Some(t) => bail!("{} has no manifest tagged {t:?}", dir.display()),
            None => bail!("{} lists no manifests", dir.display()),
        }
    }
    let mut names = Vec::new();
    for (name, desc) in selected {
        copy_tree(locked, dir, &desc)?;
        locked.set_ref(
            &name,
            ImageRef { digest: desc.digest().to_string(), media_type: desc.media_type().to_string() },
        )?;
        names.push(name);
    }
    Ok(names)
}

/// Copies a descriptor's blob and, for manifests and indexes, everything they reference.
fn copy_tree(locked: &Locked<'_>, dir: &Path, desc: &Descriptor) -> Result<()> {
    let digest = manifest::digest_of(desc)?;
    let path = dir.join("blobs/sha256").join(digest.hex());
    let meta = fs::symlink_metadata(&path)
        .with_context(|| format!("blob {digest} is missing from the layout ({})", path.display()))?;
    if !meta.is_file() {
        bail!("blob {digest} in the layout is not a regular file ({}); refusing it", path.display());
    }
    let file = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    locked.put_blob(file, &digest, desc.size())?;
    let media_type = desc.media_type().as_ref();
    if manifest::is_document(media_type) {
        let data = locked.store().read_blob(&digest)?;
        match manifest::parse(media_type, &data, &digest)? {
            Parsed::Image(image_manifest) => {
                copy_tree(locked, dir, image_manifest.config())?;
                for layer in image_manifest.layers() {
                    copy_tree(locked, dir, layer)?;
                }
            }
            Parsed::Index(index) => {
                for child in index.manifests() {
                    copy_tree(locked, dir, child)?;
                }
            }
        }
    } else if media_type.contains("manifest") || media_type.contains("index") {
        bail!("descriptor {digest} has media type {media_type:?}, which is not supported");
    }
    Ok(())
}
