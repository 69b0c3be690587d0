//! A stored image as unpack needs it: the manifest for the platform (chosen from an index),
//! its config, its layers and their DiffIDs.

use anyhow::{bail, Context, Result};

use crate::digest::Digest;
use crate::manifest::{self, Descriptor, Parsed, Platform};
use crate::store::Store;

/// Layer media types berth can extract (tar, gzip, zstd; OCI and Docker names).
const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

pub struct Image {
    pub name: String,
    pub manifest: Digest,
    pub config: serde_json::Value,
    pub layers: Vec<Descriptor>,
    pub diff_ids: Vec<Digest>,
}

/// Loads image `name`, choosing `platform` (default: this host's) from an index.
pub fn load(store: &Store, name: &str, platform: Option<&Platform>) -> Result<Image> {
    let image = store.resolve(name)?;
    let host = Platform::host();
    let wanted = platform.unwrap_or(&host);
    let (mut digest, mut media_type) = (Digest::parse(&image.digest)?, image.media_type.clone());
    loop {
        match manifest::parse(&media_type, &store.read_blob(&digest)?, &digest)? {
            Parsed::Index(entries) => {
                let chosen = entries.iter().find(|d| d.platform.as_ref().is_some_and(|p| wanted.matches(p)));
                let Some(chosen) = chosen.or(if entries.len() == 1 && entries[0].platform.is_none() { entries.first() } else { None }) else {
                    let offered: Vec<String> = entries.iter().filter_map(|d| d.platform.as_ref().map(|p| p.to_string())).collect();
                    bail!("image {name:?} has no manifest for {wanted} (it offers: {}); choose one with --platform", offered.join(", "));
                };
                digest = Digest::parse(&chosen.digest)?;
                media_type = chosen.media_type.clone();
            }
            Parsed::Image { config, layers } => {
                let config_digest = Digest::parse(&config.digest)?;
                let config: serde_json::Value = serde_json::from_slice(&store.read_blob(&config_digest)?).with_context(|| format!("image config {config_digest} is not valid JSON"))?;
                for layer in &layers {
                    if !LAYER_TYPES.contains(&layer.media_type.as_str()) {
                        bail!("layer {} of image {name:?} has media type {:?}, which berth cannot extract", layer.digest, layer.media_type);
                    }
                }
                let diff_ids = config["rootfs"]["diff_ids"]
                    .as_array()
                    .context("the image config has no rootfs.diff_ids")?
                    .iter()
                    .map(|v| Digest::parse(v.as_str().unwrap_or_default()))
                    .collect::<Result<Vec<_>>>()?;
                if diff_ids.len() != layers.len() {
                    bail!("image {name:?} lists {} layers but {} DiffIDs; the image is corrupt", layers.len(), diff_ids.len());
                }
                if layers.is_empty() {
                    bail!("image {name:?} has no layers, so there is no filesystem to unpack");
                }
                return Ok(Image { name: name.to_string(), manifest: digest, config, layers, diff_ids });
            }
        }
    }
}

/// ChainIDs: the first layer's DiffID, then sha256 of "parent-chain-id diff-id".
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut chain: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match chain.last() {
            None => diff_id.clone(),
            Some(parent) => Digest::of_bytes(format!("{parent} {diff_id}").as_bytes()),
        };
        chain.push(next);
    }
    chain
}
