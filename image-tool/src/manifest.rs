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
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// The platform an index entry is for.
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl Platform {
    /// This machine's platform in OCI's names.
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform { os: "linux".into(), architecture: architecture.into(), variant: None }
    }

    /// `os/arch[/variant]`, as `--platform` takes it.
    pub fn parse(text: &str) -> Result<Platform> {
        let parts: Vec<&str> = text.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform { os: os.to_string(), architecture: arch.to_string(), variant: None }),
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() && !variant.is_empty() => {
                Ok(Platform { os: os.to_string(), architecture: arch.to_string(), variant: Some(variant.to_string()) })
            }
            _ => bail!("platform {text:?} is not os/arch[/variant], e.g. linux/amd64 or linux/arm/v7"),
        }
    }

    /// Whether an index entry for `other` serves this platform (a variant asked for must match).
    pub fn matches(&self, other: &Platform) -> bool {
        self.os == other.os && self.architecture == other.architecture && (self.variant.is_none() || self.variant == other.variant)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
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
