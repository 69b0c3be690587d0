//! Disk usage for `df`: each image's layers (its virtual size), each bundle's own
//! writable layer and each volume, with layers shared by several images or bundles counted
//! once in the total.

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::bundle;
use crate::digest::Digest;
use crate::image::{self, chain_ids};
use crate::store::Store;

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct ImageUsage {
    pub name: String,
    /// Bytes of its extracted layers.
    pub virtual_bytes: u64,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct BundleUsage {
    pub bundle: String,
    pub image: String,
    /// Bytes of its own writable layer.
    pub own_bytes: u64,
    /// Its own bytes plus its image's layers.
    pub virtual_bytes: u64,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct VolumeUsage {
    pub name: String,
    /// Bytes of its data.
    pub bytes: u64,
    /// How many bundles mount it.
    pub bundles: usize,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub images: Vec<ImageUsage>,
    pub bundles: Vec<BundleUsage>,
    pub volumes: Vec<VolumeUsage>,
    /// Layers (each once), writable layers, volumes and blobs.
    pub total_bytes: u64,
}

/// Allocated bytes below `path`, each inode once, without following symlinks.
pub fn disk_bytes(path: &Path) -> u64 {
    fn walk(path: &Path, seen: &mut HashSet<(u64, u64)>) -> u64 {
        let Ok(meta) = std::fs::symlink_metadata(path) else { return 0 };
        let mut total = if seen.insert((meta.dev(), meta.ino())) { meta.blocks() * 512 } else { 0 };
        if meta.is_dir() {
            for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
                total += walk(&entry.path(), seen);
            }
        }
        total
    }
    walk(path, &mut HashSet::new())
}

pub fn measure(store: &Store) -> Result<Usage> {
    let layers_dir = store.root().join("layers");
    let mut layer_bytes: BTreeMap<String, u64> = BTreeMap::new();
    let mut layer_size = |chain: &Digest| {
        *layer_bytes.entry(chain.hex().to_string()).or_insert_with(|| disk_bytes(&layers_dir.join(chain.hex())))
    };
    let mut images = Vec::new();
    for name in store.refs()?.keys() {
        // An index counts by the host platform's manifest, as unpack picks it.
        let virtual_bytes = match image::load(store, name, None) {
            Ok(image) => chain_ids(&image.diff_ids).iter().map(&mut layer_size).sum(),
            Err(_) => 0,
        };
        images.push(ImageUsage { name: name.clone(), virtual_bytes });
    }
    let mut bundles = Vec::new();
    let mut uppers = 0;
    let records = bundle::records(store)?;
    let mut volumes = Vec::new();
    for volume in crate::volumes::list(store)? {
        let bytes = disk_bytes(&volume.mountpoint);
        let users = records.values().filter(|r| r.volumes.contains(&volume.name)).count();
        volumes.push(VolumeUsage { name: volume.name, bytes, bundles: users });
    }
    for (path, record) in records {
        let own_bytes = disk_bytes(&Path::new(&path).join("upper"));
        let layers: u64 = record.chain_ids.iter().filter_map(|c| Digest::parse(c).ok()).map(|c| layer_size(&c)).sum();
        uppers += own_bytes;
        bundles.push(BundleUsage { bundle: path, image: record.image, own_bytes, virtual_bytes: own_bytes + layers });
    }
    let volume_bytes: u64 = volumes.iter().map(|v| v.bytes).sum();
    let total_bytes = disk_bytes(&layers_dir) + disk_bytes(&store.blob_dir()) + uppers + volume_bytes;
    Ok(Usage { images, bundles, volumes, total_bytes })
}
