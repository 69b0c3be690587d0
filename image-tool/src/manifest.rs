//! Manifest and index documents (oci-spec's types, which read Docker schema2 too): media
//! types accepted, refused, the blobs they reference, and platforms.
use crate::digest::Digest;
use anyhow::{bail, Context, Result};
use oci_spec::image::{Arch, Descriptor, ImageIndex, ImageManifest, Os, Platform};
use serde::de::IgnoredAny;
use serde::Deserialize;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// The annotation that names an index entry (an image-layout tag).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// This machine's platform in OCI's names.
pub fn host_platform() -> Platform {
    let architecture = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    platform(Os::Linux, architecture, None)
}

fn platform(os: Os, architecture: &str, variant: Option<&str>) -> Platform {
    let mut platform = Platform::default();
    platform.set_os(os);
    platform.set_architecture(Arch::from(architecture));
    platform.set_variant(variant.map(String::from));
    platform
}

/// `os/arch[/variant]`, as `--platform` takes it.
pub fn parse_platform(text: &str) -> Result<Platform> {
    let parts: Vec<&str> = text.split('/').collect();
    match parts.as_slice() {
        [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(platform(Os::from(*os), arch, None)),
        [os, arch, variant] if !os.is_empty() && !arch.is_empty() && !variant.is_empty() => Ok(platform(Os::from(*os), arch, Some(variant))),
        _ => bail!("platform {text:?} is not os/arch[/variant], e.g. linux/amd64 or linux/arm/v7"),
    }
}

/// Whether an index entry for `offered` serves `wanted` (a variant asked for must match).
pub fn platform_matches(wanted: &Platform, offered: &Platform) -> bool {
    wanted.os() == offered.os() && wanted.architecture() == offered.architecture() && (wanted.variant().is_none() || wanted.variant() == offered.variant())
}

/// `os/arch[/variant]`, as `--platform` takes it and messages name it.
pub fn platform_name(platform: &Platform) -> String {
    match platform.variant() {
        Some(v) => format!("{}/{}/{v}", platform.os(), platform.architecture()),
        None => format!("{}/{}", platform.os(), platform.architecture()),
    }
}

/// What a document declares about itself, read before it is parsed as a manifest or index.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Kind {
    #[serde(default)]
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<IgnoredAny>,
}

/// What a manifest or index points at, once its kind is checked.
pub enum Parsed {
    /// An image manifest (OCI or Docker schema2): config then layers.
    Image(Box<ImageManifest>),
    /// An index or Docker manifest list: child manifests.
    Index(Box<ImageIndex>),
}

/// Parses the document `data` that a descriptor of type `media_type` points at (the bytes
/// whose digest was verified; nothing is re-serialized).
pub fn parse(media_type: &str, data: &[u8], digest: &Digest) -> Result<Parsed> {
    let doc: Kind = serde_json::from_slice(data).with_context(|| format!("manifest {digest} is not valid JSON"))?;
    if doc.schema_version == 1 {
        bail!("manifest {digest} is Docker schema1, which is not supported; convert it with `skopeo copy` first");
    }
    let kind = doc.media_type.as_deref().unwrap_or(media_type);
    match kind {
        OCI_MANIFEST | DOCKER_MANIFEST => {
            if doc.config.is_none() {
                bail!("image manifest {digest} has no config");
            }
            let manifest: ImageManifest = serde_json::from_slice(data).with_context(|| format!("manifest {digest} is not a valid image manifest"))?;
            let config_type = manifest.config().media_type().as_ref();
            if config_type != OCI_CONFIG && config_type != DOCKER_CONFIG {
                bail!("manifest {digest} is an artifact with config type {config_type:?}, not a container image");
            }
            Ok(Parsed::Image(Box::new(manifest)))
        }
        OCI_INDEX | DOCKER_LIST => Ok(Parsed::Index(Box::new(serde_json::from_slice(data).with_context(|| format!("manifest {digest} is not a valid image index"))?))),
        other => bail!("manifest {digest} has media type {other:?}, which is not an image manifest or index"),
    }
}

/// The digest a descriptor names, checked as the store's digests are.
pub fn digest_of(descriptor: &Descriptor) -> Result<Digest> {
    Digest::parse(descriptor.digest().as_ref())
}
