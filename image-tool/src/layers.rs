//! Extracted layers keyed by ChainID under `layers/<hex>/`: missing ones are extracted in
//! parallel, each into its own staging directory, and renamed in only after the DiffID
//! of what was extracted matches the image config.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::digest::Digest;
use crate::extract::{self, Limits};
use crate::image::{chain_ids, Image};
use crate::store::Locked;

/// The extracted directories of `image`'s layers, bottom first, extracting what is missing.
pub fn ensure(
    locked: &Locked<'_>,
    image: &Image,
    limits: Limits,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<PathBuf>> {
    let store = locked.store();
    let chains = chain_ids(&image.diff_ids);
    let dirs: Vec<PathBuf> = chains.iter().map(|c| store.root().join("layers").join(c.hex())).collect();
    let missing: Vec<usize> = (0..dirs.len()).filter(|&i| !dirs[i].is_dir()).collect();
    for &i in &missing {
        progress(&format!("extracting layer {}/{} {}", i + 1, dirs.len(), image.layers[i].digest()));
    }
    // One worker per CPU takes layers off a shared queue (an image may have 500).
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).max(2);
    let queue = std::sync::Mutex::new(missing);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let Some(i) = queue.lock().unwrap().pop() else { return };
                if let Err(e) = extract_one(
                    locked,
                    image.layers[i].digest().as_ref(),
                    &image.diff_ids[i],
                    &chains[i],
                    &dirs[i],
                    limits,
                ) {
                    failures.lock().unwrap().push(e);
                }
            });
        }
    });
    if let Some(first) = failures.into_inner().unwrap().into_iter().next() {
        return Err(first);
    }
    Ok(dirs)
}

/// Extracts one layer into staging and renames it in once its DiffID checks out.
fn extract_one(
    locked: &Locked<'_>,
    blob_digest: &str,
    diff_id: &Digest,
    chain: &Digest,
    dest: &Path,
    limits: Limits,
) -> Result<()> {
    let blob = locked.store().blob_path(&Digest::parse(blob_digest)?);
    let staging = locked.staging(&format!("layer-{}", chain.hex()));
    std::fs::create_dir(&staging).with_context(|| format!("cannot create {}", staging.display()))?;
    let checked = extract::extract(&blob, &staging, limits).with_context(|| format!("cannot extract layer {blob_digest}")).and_then(|got| {
        if got != *diff_id {
            bail!("layer {blob_digest} unpacks to DiffID {got}, but the image config says {diff_id}; the image is corrupt");
        }
        std::fs::rename(&staging, dest).with_context(|| format!("cannot move the layer into {}", dest.display()))
    });
    if checked.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    checked
}
