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

/// Whether `media_type` is a manifest or index berth reads (OCI or Docker schema2).
pub fn is_document(media_type: &str) -> bool {
    matches!(media_type, OCI_MANIFEST | OCI_INDEX | DOCKER_MANIFEST | DOCKER_LIST)
}

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
        [os, arch, variant] if !os.is_empty() && !arch.is_empty() && !variant.is_empty() => {
            Ok(platform(Os::from(*os), arch, Some(variant)))
        }
        _ => bail!("platform {text:?} is not os/arch[/variant], e.g. linux/amd64 or linux/arm/v7"),
    }
}

/// Whether an index entry for `offered` serves `wanted` (a variant asked for must match).
pub fn platform_matches(wanted: &Platform, offered: &Platform) -> bool {
    wanted.os() == offered.os()
        && wanted.architecture() == offered.architecture()
        && (wanted.variant().is_none() || wanted.variant() == offered.variant())
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
            let manifest: ImageManifest = serde_json::from_slice(data)
                .with_context(|| format!("manifest {digest} is not a valid image manifest"))?;
            let config_type = manifest.config().media_type().as_ref();
            if config_type != OCI_CONFIG && config_type != DOCKER_CONFIG {
                bail!("manifest {digest} is an artifact with config type {config_type:?}, not a container image");
            }
            Ok(Parsed::Image(Box::new(manifest)))
        }
        OCI_INDEX | DOCKER_LIST => Ok(Parsed::Index(Box::new(
            serde_json::from_slice(data).with_context(|| format!("manifest {digest} is not a valid image index"))?,
        ))),
        other => bail!("manifest {digest} has media type {other:?}, which is not an image manifest or index"),
    }
}

/// The digest a descriptor names, checked as the store's digests are.
pub fn digest_of(descriptor: &Descriptor) -> Result<Digest> {
    Digest::parse(descriptor.digest().as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(media_type: &str, doc: serde_json::Value) -> Result<Parsed> {
        let data = serde_json::to_vec(&doc).unwrap();
        parse(media_type, &data, &Digest::of_bytes(&data))
    }

    fn descriptor(media_type: &str) -> serde_json::Value {
        serde_json::json!({ "mediaType": media_type, "digest": Digest::of_bytes(media_type.as_bytes()).to_string(), "size": 1 })
    }

    #[test]
    fn docker_schema2_manifests_and_lists_are_read() {
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": DOCKER_MANIFEST, "config": descriptor(DOCKER_CONFIG),
            "layers": [descriptor("application/vnd.docker.image.rootfs.diff.tar.gzip")]
        });
        let Parsed::Image(image) = parsed(DOCKER_MANIFEST, manifest).unwrap() else {
            panic!("not read as an image manifest")
        };
        assert_eq!(image.layers()[0].media_type().as_ref(), "application/vnd.docker.image.rootfs.diff.tar.gzip");
        let mut entry = descriptor(DOCKER_MANIFEST);
        entry["platform"] = serde_json::json!({ "os": "linux", "architecture": "arm", "variant": "v7" });
        let list = serde_json::json!({ "schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": [entry] });
        let Parsed::Index(index) = parsed(OCI_INDEX, list).unwrap() else { panic!("not read as an index") };
        let platform = index.manifests()[0].platform().clone().unwrap();
        assert_eq!(platform_name(&platform), "linux/arm/v7");
        assert!(platform_matches(&parse_platform("linux/arm").unwrap(), &platform));
        assert!(!platform_matches(&parse_platform("linux/arm/v6").unwrap(), &platform));
        assert!(!platform_matches(&parse_platform("linux/arm64").unwrap(), &platform));
    }

    #[test]
    fn schema1_artifacts_and_other_documents_are_refused() {
        let e = parsed(DOCKER_MANIFEST, serde_json::json!({ "schemaVersion": 1, "name": "x", "fsLayers": [] }))
            .err()
            .unwrap();
        assert!(e.to_string().contains("schema1"), "{e}");
        let artifact = serde_json::json!({ "schemaVersion": 2, "config": descriptor("application/vnd.example.sbom+json"), "layers": [] });
        let e = parsed(OCI_MANIFEST, artifact).err().unwrap();
        assert!(e.to_string().contains("not a container image"), "{e}");
        let e = parsed(OCI_MANIFEST, serde_json::json!({ "schemaVersion": 2, "layers": [] })).err().unwrap();
        assert!(e.to_string().contains("has no config"), "{e}");
        let e = parsed("application/vnd.example+json", serde_json::json!({ "schemaVersion": 2 })).err().unwrap();
        assert!(e.to_string().contains("not an image manifest or index"), "{e}");
        assert!(parse_platform("linux").is_err());
    }
}
