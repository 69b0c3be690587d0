//! Manifest and index documents: media types accepted, refused, and the blobs they reference.
use crate::digest::Digest;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::HashMap;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

#[derive(Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    #[serde(default)]
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

/// What a manifest or index points at, once its kind is checked.
pub enum Parsed {
    /// An image manifest: config then layers.
    Image {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
    /// An index or manifest list: child manifests.
    Index(Vec<Descriptor>),
}

/// Parses the document `data` that a descriptor of type `media_type` points at.
pub fn parse(media_type: &str, data: &[u8], digest: &Digest) -> Result<Parsed> {
    let doc: Document = serde_json::from_slice(data)
        .with_context(|| format!("manifest {digest} is not valid JSON"))?;
    if doc.schema_version == 1 {
        bail!("manifest {digest} is Docker schema1, which is not supported; convert it with `skopeo copy` first");
    }
    let kind = doc.media_type.as_deref().unwrap_or(media_type);
    match kind {
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let config = doc
                .config
                .with_context(|| format!("image manifest {digest} has no config"))?;
            if config.media_type != OCI_CONFIG && config.media_type != DOCKER_CONFIG {
                bail!(
                    "manifest {digest} is an artifact with config type {:?}, not a container image",
                    config.media_type
                );
            }
            Ok(Parsed::Image {
                config,
                layers: doc.layers,
            })
        }
        OCI_INDEX | DOCKER_LIST => Ok(Parsed::Index(doc.manifests)),
        other => bail!(
            "manifest {digest} has media type {other:?}, which is not an image manifest or index"
        ),
    }
}
