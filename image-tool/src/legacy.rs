//! The legacy `docker save` archive (a `manifest.json` listing each image's config and
//! layer tars, layers possibly symlinks to other entries) turned into an OCI layout in a
//! staging directory, to be imported (and verified) like any other layout.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};
use oci_spec::image::{Descriptor, ImageIndexBuilder, ImageManifestBuilder, MediaType};
use serde::Deserialize;

use crate::digest::copy_hashing;
use crate::manifest::{DOCKER_CONFIG, DOCKER_MANIFEST, REF_NAME};

/// Largest config or manifest.json read from an archive.
const MAX_METADATA: u64 = 4 << 20;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SavedImage {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Normalises an archive path: no `./`, no leading `/`, `..` resolved (and refused past
/// the top).
fn clean(path: &str) -> Result<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    bail!("archive path {path:?} climbs out of the archive");
                }
            }
            other => parts.push(other),
        }
    }
    Ok(parts.join("/"))
}

/// Follows symlink entries (relative to their own directory) to a regular file's path.
fn resolve(path: &str, links: &HashMap<String, String>) -> Result<String> {
    let mut current = clean(path)?;
    for _ in 0..16 {
        let Some(target) = links.get(&current) else { return Ok(current) };
        let dir = current.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        current = clean(&if target.starts_with('/') { target.clone() } else { format!("{dir}/{target}") })?;
    }
    bail!("archive entry {path:?} is a symlink loop")
}

/// Writes an OCI layout into `staging` from the legacy archive `file`.
pub fn stage(file: &Path, staging: &Path) -> Result<()> {
    // Pass 1: manifest.json and the archive's symlinks.
    let mut links = HashMap::new();
    let mut manifest = None;
    let mut archive = tar::Archive::new(File::open(file).with_context(|| format!("cannot open {}", file.display()))?);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = clean(&String::from_utf8_lossy(&entry.path_bytes()))?;
        if entry.header().entry_type().is_symlink() {
            let target = entry.link_name_bytes().map(|t| String::from_utf8_lossy(&t).into_owned()).unwrap_or_default();
            links.insert(path, target);
        } else if path == "manifest.json" {
            let mut text = Vec::new();
            (&mut entry).take(MAX_METADATA + 1).read_to_end(&mut text)?;
            if text.len() as u64 > MAX_METADATA {
                bail!("manifest.json is larger than {MAX_METADATA} bytes");
            }
            manifest = Some(text);
        }
    }
    let images: Vec<SavedImage> = serde_json::from_slice(&manifest.context("the archive has no manifest.json")?)
        .context("manifest.json of the docker-archive is not valid")?;
    // Every file the images name, by resolved path.
    let mut wanted: HashMap<String, Option<(String, u64)>> = HashMap::new();
    for image in &images {
        for path in std::iter::once(&image.config).chain(&image.layers) {
            wanted.insert(resolve(path, &links)?, None);
        }
    }
    // Pass 2: copy them into blobs, hashing on the way.
    let blobs = staging.join("blobs/sha256");
    fs::create_dir_all(&blobs).with_context(|| format!("cannot create {}", blobs.display()))?;
    let mut archive = tar::Archive::new(File::open(file)?);
    for (n, entry) in archive.entries()?.enumerate() {
        let mut entry = entry?;
        let path = clean(&String::from_utf8_lossy(&entry.path_bytes()))?;
        let Some(slot) = wanted.get_mut(&path) else { continue };
        if !entry.header().entry_type().is_file() {
            bail!("archive entry {path:?} is not a regular file");
        }
        let partial = staging.join(format!("legacy-{n}"));
        let (digest, size) = copy_hashing(&mut entry, io::BufWriter::new(File::create(&partial)?))
            .with_context(|| format!("cannot read archive entry {path:?}"))?;
        fs::rename(&partial, blobs.join(digest.hex()))?;
        *slot = Some((digest.to_string(), size));
    }
    let found = |path: &str| -> Result<(String, u64)> {
        wanted
            .get(&resolve(path, &links)?)
            .cloned()
            .flatten()
            .with_context(|| format!("the archive lacks {path:?}, which manifest.json names"))
    };
    let mut entries = Vec::new();
    for image in &images {
        let (config_digest, config_size) = found(&image.config)?;
        let mut layers = Vec::new();
        for layer in &image.layers {
            let (digest, size) = found(layer)?;
            let mut head = [0u8; 2];
            let _ = File::open(blobs.join(&digest[7..]))?.read(&mut head)?;
            let media_type = if head == [0x1f, 0x8b] {
                "application/vnd.docker.image.rootfs.diff.tar.gzip"
            } else {
                "application/vnd.docker.image.rootfs.diff.tar"
            };
            layers.push(Descriptor::new(MediaType::from(media_type), size, descriptor_digest(&digest)?));
        }
        // The manifest's digest is taken from the bytes written, which the import then verifies.
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::from(DOCKER_MANIFEST))
            .config(Descriptor::new(MediaType::from(DOCKER_CONFIG), config_size, descriptor_digest(&config_digest)?))
            .layers(layers)
            .build()?;
        let manifest = serde_json::to_vec(&manifest)?;
        let digest = crate::digest::Digest::of_bytes(&manifest);
        fs::write(blobs.join(digest.hex()), &manifest)?;
        let names = image.repo_tags.clone().filter(|t| !t.is_empty()).unwrap_or_else(|| vec![config_digest.clone()]);
        for name in names {
            let mut entry = Descriptor::new(
                MediaType::from(DOCKER_MANIFEST),
                manifest.len() as u64,
                descriptor_digest(&digest.to_string())?,
            );
            entry.set_annotations(Some(HashMap::from([(REF_NAME.to_string(), name)])));
            entries.push(entry);
        }
    }
    fs::write(staging.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let index = ImageIndexBuilder::default().schema_version(2u32).manifests(entries).build()?;
    fs::write(staging.join("index.json"), serde_json::to_vec(&index)?)?;
    Ok(())
}

/// A digest this module computed, as a descriptor holds it.
fn descriptor_digest(digest: &str) -> Result<oci_spec::image::Digest> {
    digest.parse().with_context(|| format!("digest {digest} cannot go in a descriptor"))
}
