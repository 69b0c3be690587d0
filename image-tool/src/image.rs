//! A stored image as unpack needs it: the manifest for the platform (chosen from an index),
//! its config, its layers and their DiffIDs.

use anyhow::{bail, Context, Result};

use crate::digest::Digest;
use crate::manifest::{self, Parsed};
use crate::store::Store;
use oci_spec::image::{Descriptor, ImageConfiguration, Platform};

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
    pub config: ImageConfiguration,
    pub layers: Vec<Descriptor>,
    pub diff_ids: Vec<Digest>,
}

/// Loads image `name`, choosing `platform` (default: this host's) from an index.
pub fn load(store: &Store, name: &str, platform: Option<&Platform>) -> Result<Image> {
    let image = store.resolve(name)?;
    let host = manifest::host_platform();
    let wanted = platform.unwrap_or(&host);
    let (mut digest, mut media_type) = (Digest::parse(&image.digest)?, image.media_type.clone());
    loop {
        match manifest::parse(&media_type, &store.read_blob(&digest)?, &digest)? {
            Parsed::Index(index) => {
                let entries = index.manifests();
                let chosen = entries
                    .iter()
                    .find(|d| d.platform().as_ref().is_some_and(|p| manifest::platform_matches(wanted, p)));
                let Some(chosen) = chosen.or(if entries.len() == 1 && entries[0].platform().is_none() {
                    entries.first()
                } else {
                    None
                }) else {
                    let offered: Vec<String> =
                        entries.iter().filter_map(|d| d.platform().as_ref().map(manifest::platform_name)).collect();
                    bail!(
                        "image {name:?} has no manifest for {} (it offers: {}); choose one with --platform",
                        manifest::platform_name(wanted),
                        offered.join(", ")
                    );
                };
                digest = manifest::digest_of(chosen)?;
                media_type = chosen.media_type().to_string();
            }
            Parsed::Image(image_manifest) => {
                let config_digest = manifest::digest_of(image_manifest.config())?;
                let layers = image_manifest.layers().clone();
                let config: ImageConfiguration = serde_json::from_slice(&store.read_blob(&config_digest)?)
                    .with_context(|| format!("image config {config_digest} is not a valid image config"))?;
                for layer in &layers {
                    if !LAYER_TYPES.contains(&layer.media_type().as_ref()) {
                        bail!(
                            "layer {} of image {name:?} has media type {:?}, which berth cannot extract",
                            layer.digest(),
                            layer.media_type().as_ref()
                        );
                    }
                }
                let diff_ids =
                    config.rootfs().diff_ids().iter().map(|d| Digest::parse(d)).collect::<Result<Vec<_>>>()?;
                if diff_ids.len() != layers.len() {
                    bail!(
                        "image {name:?} lists {} layers but {} DiffIDs; the image is corrupt",
                        layers.len(),
                        diff_ids.len()
                    );
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
