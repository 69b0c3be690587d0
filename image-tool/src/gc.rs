//! Garbage collection: removes blobs that no stored image name reaches, and extracted
//! layers that neither a stored image nor a bundle uses.
use crate::bundle;
use crate::digest::Digest;
use crate::image::chain_ids;
use crate::manifest::{self, Parsed};
use crate::store::{Locked, Store};
use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::fs;

/// What is still in use: blob hexes and layer ChainID hexes.
#[derive(Default)]
struct Live {
    blobs: BTreeSet<String>,
    layers: BTreeSet<String>,
}

fn mark(store: &Store, digest: &str, media_type: &str, live: &mut Live) -> Result<()> {
    let digest = Digest::parse(digest)?;
    if !live.blobs.insert(digest.hex().to_string()) || !manifest::is_document(media_type) {
        return Ok(());
    }
    match manifest::parse(media_type, &store.read_blob(&digest)?, &digest)? {
        Parsed::Image(image_manifest) => {
            let config_digest = manifest::digest_of(image_manifest.config())?;
            live.blobs.insert(config_digest.hex().to_string());
            for layer in image_manifest.layers() {
                live.blobs.insert(manifest::digest_of(layer)?.hex().to_string());
            }
            // Only the DiffIDs are read, not oci-spec's whole ImageConfiguration: gc must walk
            // every stored image, also one whose config unpack would refuse.
            let config: serde_json::Value = serde_json::from_slice(&store.read_blob(&config_digest)?)?;
            let diff_ids = config["rootfs"]["diff_ids"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| Digest::parse(d.as_str().unwrap_or_default()))
                .collect::<Result<Vec<_>>>()?;
            live.layers.extend(chain_ids(&diff_ids).iter().map(|c| c.hex().to_string()));
        }
        Parsed::Index(index) => {
            for child in index.manifests() {
                mark(store, child.digest().as_ref(), child.media_type().as_ref(), live)?;
            }
        }
    }
    Ok(())
}

/// Deletes every unreachable blob and unused layer; returns what was removed.
pub fn collect(locked: &Locked<'_>) -> Result<Vec<String>> {
    let store = locked.store();
    let mut live = Live::default();
    for record in bundle::records(store)?.values() {
        live.layers.extend(record.chain_ids.iter().filter_map(|c| Digest::parse(c).ok()).map(|c| c.hex().to_string()));
    }
    for (name, image) in store.refs()? {
        mark(store, &image.digest, &image.media_type, &mut live)
            .with_context(|| format!("cannot walk image {name:?}; the store may be damaged"))?;
    }
    let dir = store.blob_dir();
    let mut removed = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !live.blobs.contains(&name) {
            fs::remove_file(entry.path())
                .with_context(|| format!("cannot remove unused blob {}", entry.path().display()))?;
            removed.push(format!("sha256:{name}"));
        }
    }
    let dir = store.root().join("layers");
    for entry in fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !live.layers.contains(&name) {
            fs::remove_dir_all(entry.path())
                .with_context(|| format!("cannot remove unused layer {}", entry.path().display()))?;
            removed.push(format!("layer sha256:{name}"));
        }
    }
    Ok(removed)
}
