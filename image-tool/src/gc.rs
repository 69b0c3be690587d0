//! Garbage collection: removes blobs that no stored image name reaches.
use crate::digest::Digest;
use crate::manifest::{self, Parsed};
use crate::store::{Locked, Store};
use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::fs;

fn is_document(media_type: &str) -> bool {
    matches!(
        media_type,
        manifest::OCI_MANIFEST
            | manifest::OCI_INDEX
            | manifest::DOCKER_MANIFEST
            | manifest::DOCKER_LIST
    )
}

fn mark(store: &Store, digest: &str, media_type: &str, live: &mut BTreeSet<String>) -> Result<()> {
    let digest = Digest::parse(digest)?;
    if !live.insert(digest.hex().to_string()) || !is_document(media_type) {
        return Ok(());
    }
    match manifest::parse(media_type, &store.read_blob(&digest)?, &digest)? {
        Parsed::Image { config, layers } => {
            live.insert(Digest::parse(&config.digest)?.hex().to_string());
            for layer in layers {
                live.insert(Digest::parse(&layer.digest)?.hex().to_string());
            }
        }
        Parsed::Index(children) => {
            for child in children {
                mark(store, &child.digest, &child.media_type, live)?;
            }
        }
    }
    Ok(())
}

/// Deletes every unreachable blob; returns the digests removed.
pub fn collect(locked: &Locked<'_>) -> Result<Vec<String>> {
    let store = locked.store();
    let mut live = BTreeSet::new();
    for (name, image) in store.refs()? {
        mark(store, &image.digest, &image.media_type, &mut live)
            .with_context(|| format!("cannot walk image {name:?}; the store may be damaged"))?;
    }
    let dir = store.blob_dir();
    let mut removed = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !live.contains(&name) {
            fs::remove_file(entry.path())
                .with_context(|| format!("cannot remove unused blob {}", entry.path().display()))?;
            removed.push(format!("sha256:{name}"));
        }
    }
    Ok(removed)
}
